// LiteRT's aarch64 runtime on one TFLite model, for the ARM estimate's anchor.
//
// `qatie-compile estimate` on an artifact built from a .tflite file (compile/offline/litert_arm64.py)
// cross-compiles this against `libLiteRt.so` from LiteRT's aarch64 pip wheel (`ai-edge-litert`,
// the same version as the host's) and runs it under qemu-aarch64 with the block-profile plugin,
// once with RUNS=1 and once with RUNS=2: the difference is one inference. LiteRT's C API
// (CompiledModel), CPU accelerator, which runs the model through XNNPACK: what an Android app
// using LiteRT ships. One thread.
//
// Usage: litert_run MODEL INPUT.bin OUTPUT.bin RUNS MAPS
// INPUT.bin holds the input tensor's bytes (its own type: float32 or int8 codes); OUTPUT.bin
// receives the output tensor's bytes; MAPS receives /proc/self/maps (qemu's guest view: the
// addresses the plugin reports).
//
// No C headers come with the pip wheel. The declarations below are those of LiteRT's C API
// (litert/c/litert_*.h, whose functions the library exports under the symbol version VERS_1.0);
// every handle is an opaque pointer. A ranked tensor type is a struct the library fills and
// reads back, never read here: it is held in storage larger than LiteRT's.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer_run.h"

typedef int LiteRtStatus;  // an enum in LiteRT; kLiteRtStatusOk = 0
typedef size_t LiteRtParamIndex;
typedef void *LiteRtEnvironment, *LiteRtModel, *LiteRtOptions, *LiteRtOpaqueOptions, *LiteRtCompiledModel,
    *LiteRtSignature, *LiteRtTensor, *LiteRtTensorBufferRequirements, *LiteRtTensorBuffer;
typedef struct {
  _Alignas(16) unsigned char bytes[1024];  // LiteRtRankedTensorType: element type + layout (about 80 bytes)
} RankedTensorType;

enum { CPU_ACCELERATOR = 1, LOCK_READ = 0, LOCK_WRITE = 1 };
#define CPU_OPTIONS "xnnpack"      // LrtGetCpuOptionsIdentifier()
#define CPU_SETTINGS "num_threads = 1\n"  // LrtGetOpaqueCpuOptionsData's TOML payload

LiteRtStatus LiteRtCreateEnvironment(int, const void *, LiteRtEnvironment *);
LiteRtStatus LiteRtCreateModelFromFile(LiteRtEnvironment, const char *, LiteRtModel *);
LiteRtStatus LiteRtCreateOptions(LiteRtOptions *);
LiteRtStatus LiteRtSetOptionsHardwareAccelerators(LiteRtOptions, int);
LiteRtStatus LiteRtCreateOpaqueOptions(const char *, void *, void (*)(void *), LiteRtOpaqueOptions *);
LiteRtStatus LiteRtAddOpaqueOptions(LiteRtOptions, LiteRtOpaqueOptions);
LiteRtStatus LiteRtCreateCompiledModel(LiteRtEnvironment, LiteRtModel, LiteRtOptions, LiteRtCompiledModel *);
LiteRtStatus LiteRtGetModelSignature(LiteRtModel, LiteRtParamIndex, LiteRtSignature *);
LiteRtStatus LiteRtGetSignatureInputTensorByIndex(LiteRtSignature, LiteRtParamIndex, LiteRtTensor *);
LiteRtStatus LiteRtGetSignatureOutputTensorByIndex(LiteRtSignature, LiteRtParamIndex, LiteRtTensor *);
LiteRtStatus LiteRtGetRankedTensorType(LiteRtTensor, RankedTensorType *);
LiteRtStatus LiteRtGetCompiledModelInputBufferRequirements(LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex,
                                                           LiteRtTensorBufferRequirements *);
LiteRtStatus LiteRtGetCompiledModelOutputBufferRequirements(LiteRtCompiledModel, LiteRtParamIndex, LiteRtParamIndex,
                                                            LiteRtTensorBufferRequirements *);
LiteRtStatus LiteRtCreateManagedTensorBufferFromRequirements(LiteRtEnvironment, const RankedTensorType *,
                                                             LiteRtTensorBufferRequirements, LiteRtTensorBuffer *);
LiteRtStatus LiteRtGetTensorBufferPackedSize(LiteRtTensorBuffer, size_t *);
LiteRtStatus LiteRtLockTensorBuffer(LiteRtTensorBuffer, void **, int);
LiteRtStatus LiteRtUnlockTensorBuffer(LiteRtTensorBuffer);
LiteRtStatus LiteRtRunCompiledModel(LiteRtCompiledModel, LiteRtParamIndex, size_t, LiteRtTensorBuffer *, size_t,
                                    LiteRtTensorBuffer *);

static void check(LiteRtStatus status, const char *what) {
  if (status == 0) return;
  fprintf(stderr, "litert: %s: status %d (litert/c/litert_common.h, LiteRtStatus)\n", what, status);
  exit(1);
}

// A buffer of the layout the compiled model asks for, for the signature's input or output 0.
static LiteRtTensorBuffer tensor_buffer(LiteRtEnvironment env, LiteRtModel model, LiteRtCompiledModel compiled,
                                        int is_input) {
  LiteRtSignature signature;
  LiteRtTensor tensor;
  LiteRtTensorBufferRequirements requirements;
  LiteRtTensorBuffer buffer;
  static RankedTensorType type;
  check(LiteRtGetModelSignature(model, 0, &signature), "GetModelSignature");
  check(is_input ? LiteRtGetSignatureInputTensorByIndex(signature, 0, &tensor)
                 : LiteRtGetSignatureOutputTensorByIndex(signature, 0, &tensor),
        "GetSignatureTensorByIndex");
  check(LiteRtGetRankedTensorType(tensor, &type), "GetRankedTensorType");
  check(is_input ? LiteRtGetCompiledModelInputBufferRequirements(compiled, 0, 0, &requirements)
                 : LiteRtGetCompiledModelOutputBufferRequirements(compiled, 0, 0, &requirements),
        "GetCompiledModelBufferRequirements");
  check(LiteRtCreateManagedTensorBufferFromRequirements(env, &type, requirements, &buffer),
        "CreateManagedTensorBufferFromRequirements");
  return buffer;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s MODEL INPUT.bin OUTPUT.bin RUNS MAPS\n", argv[0]);
    return 2;
  }
  LiteRtEnvironment env;
  LiteRtModel model;
  LiteRtOptions options;
  LiteRtOpaqueOptions cpu;
  LiteRtCompiledModel compiled;
  check(LiteRtCreateEnvironment(0, NULL, &env), "CreateEnvironment");
  check(LiteRtCreateModelFromFile(env, argv[1], &model), "CreateModelFromFile");
  check(LiteRtCreateOptions(&options), "CreateOptions");
  check(LiteRtSetOptionsHardwareAccelerators(options, CPU_ACCELERATOR), "SetOptionsHardwareAccelerators");
  check(LiteRtCreateOpaqueOptions(CPU_OPTIONS, strdup(CPU_SETTINGS), free, &cpu), "CreateOpaqueOptions");
  check(LiteRtAddOpaqueOptions(options, cpu), "AddOpaqueOptions");
  check(LiteRtCreateCompiledModel(env, model, options, &compiled), "CreateCompiledModel");
  LiteRtTensorBuffer input = tensor_buffer(env, model, compiled, 1), output = tensor_buffer(env, model, compiled, 0);

  size_t given, size;
  void *data = read_file(argv[2], &given), *host;
  check(LiteRtGetTensorBufferPackedSize(input, &size), "GetTensorBufferPackedSize");
  if (given != size) {
    fprintf(stderr, "litert: %s holds %zu bytes, the model's input %zu\n", argv[2], given, size);
    return 1;
  }
  check(LiteRtLockTensorBuffer(input, &host, LOCK_WRITE), "LockTensorBuffer");
  memcpy(host, data, size);
  check(LiteRtUnlockTensorBuffer(input), "UnlockTensorBuffer");

  const int runs = atoi(argv[4]);
  for (int i = 0; i < runs; ++i) check(LiteRtRunCompiledModel(compiled, 0, 1, &input, 1, &output), "RunCompiledModel");

  check(LiteRtGetTensorBufferPackedSize(output, &size), "GetTensorBufferPackedSize");
  check(LiteRtLockTensorBuffer(output, &host, LOCK_READ), "LockTensorBuffer");
  FILE *out = fopen(argv[3], "wb");
  if (!out || fwrite(host, 1, size, out) != size) return 1;
  fclose(out);
  check(LiteRtUnlockTensorBuffer(output), "UnlockTensorBuffer");

  if (write_maps(argv[5])) return 1;
  return 0;  // the runtime's objects are released by the process's exit
}
