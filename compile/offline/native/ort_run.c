// ONNX Runtime's aarch64 runtime on one model, for the ARM estimate's anchor.
//
// `qatie-compile estimate --peer` (compile/offline/arm64_peers.py) cross-compiles this
// against `libonnxruntime.so` from ONNX Runtime's aarch64 pip wheel (the same version as the
// host's) and runs it under qemu-aarch64 with the block-profile plugin, once with RUNS=1 and
// once with RUNS=2: the difference is one inference. CPU execution provider, default graph
// optimizations (what a user gets), one thread, no spinning.
//
// Usage: ort_run MODEL INPUT_NAME INPUT.bin D0xD1x... OUTPUT_NAME OUTPUT.bin OUTPUT_COUNT RUNS MAPS
// INPUT.bin holds float32 values; OUTPUT.bin receives OUTPUT_COUNT float32 values; MAPS receives
// /proc/self/maps (qemu's guest view: the addresses the plugin reports).
//
// No C API headers come with the pip wheel, and Debian has no ONNX Runtime package. ONNX
// Runtime's C API is a table of function pointers (`OrtApi`) whose order never changes: new
// functions are appended (onnxruntime_c_api.h: "new functions must be added at the end"). The
// entries used here are called by their index in that table, as of ORT_API_VERSION 13 (ONNX
// Runtime 1.13), which every later runtime serves.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer_run.h"

#define ORT_API_VERSION 13
typedef struct OrtStatus OrtStatus;
typedef struct OrtApiBase {
  const void *(*GetApi)(uint32_t version);  // a table of function pointers
  const char *(*GetVersionString)(void);
} OrtApiBase;
const OrtApiBase *OrtGetApiBase(void);

// Indices in OrtApi (onnxruntime_c_api.h, `struct OrtApi`, counted from 0).
enum {
  GET_ERROR_MESSAGE = 2,
  CREATE_ENV = 3,
  CREATE_SESSION = 7,
  RUN = 9,
  CREATE_SESSION_OPTIONS = 10,
  SET_GRAPH_OPTIMIZATION_LEVEL = 23,
  SET_INTRA_OP_NUM_THREADS = 24,
  SET_INTER_OP_NUM_THREADS = 25,
  CREATE_TENSOR_WITH_DATA = 49,
  GET_TENSOR_MUTABLE_DATA = 51,
  CREATE_CPU_MEMORY_INFO = 69,
  ADD_SESSION_CONFIG_ENTRY = 130,
};
enum { ORT_LOGGING_LEVEL_WARNING = 2, ORT_ENABLE_ALL = 99, ORT_ARENA_ALLOCATOR = 1, ORT_MEM_TYPE_DEFAULT = 0,
       ONNX_TENSOR_FLOAT = 1 };

static void *const *api;
#define FN(index, type) ((type)api[index])

static void check(OrtStatus *status, const char *what) {
  if (!status) return;
  const char *message = FN(GET_ERROR_MESSAGE, const char *(*)(const OrtStatus *))(status);
  fprintf(stderr, "onnxruntime: %s: %s\n", what, message);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: %s MODEL INPUT_NAME INPUT.bin D0xD1x... OUTPUT_NAME OUTPUT.bin OUTPUT_COUNT RUNS MAPS\n",
            argv[0]);
    return 2;
  }
  api = (void *const *)OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (!api) {
    fprintf(stderr, "onnxruntime %s does not serve C API version %d\n", OrtGetApiBase()->GetVersionString(),
            ORT_API_VERSION);
    return 1;
  }
  void *env, *options, *session, *memory, *input, *output = NULL;
  check(FN(CREATE_ENV, OrtStatus *(*)(int, const char *, void **))(ORT_LOGGING_LEVEL_WARNING, "qatie", &env),
        "CreateEnv");
  check(FN(CREATE_SESSION_OPTIONS, OrtStatus *(*)(void **))(&options), "CreateSessionOptions");
  check(FN(SET_INTRA_OP_NUM_THREADS, OrtStatus *(*)(void *, int))(options, 1), "SetIntraOpNumThreads");
  check(FN(SET_INTER_OP_NUM_THREADS, OrtStatus *(*)(void *, int))(options, 1), "SetInterOpNumThreads");
  check(FN(SET_GRAPH_OPTIMIZATION_LEVEL, OrtStatus *(*)(void *, int))(options, ORT_ENABLE_ALL), "optimization level");
  check(FN(ADD_SESSION_CONFIG_ENTRY, OrtStatus *(*)(void *, const char *, const char *))(
            options, "session.intra_op.allow_spinning", "0"),
        "AddSessionConfigEntry");
  check(FN(CREATE_SESSION, OrtStatus *(*)(void *, const char *, void *, void **))(env, argv[1], options, &session),
        "CreateSession");

  size_t input_size;
  void *input_data = read_file(argv[3], &input_size);
  int64_t shape[8];
  size_t rank = 0;
  for (char *dim = strtok(argv[4], "x"); dim && rank < 8; dim = strtok(NULL, "x")) shape[rank++] = atoll(dim);
  check(FN(CREATE_CPU_MEMORY_INFO, OrtStatus *(*)(int, int, void **))(ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT,
                                                                       &memory),
        "CreateCpuMemoryInfo");
  check(FN(CREATE_TENSOR_WITH_DATA, OrtStatus *(*)(void *, void *, size_t, const int64_t *, size_t, int, void **))(
            memory, input_data, input_size, shape, rank, ONNX_TENSOR_FLOAT, &input),
        "CreateTensorWithDataAsOrtValue");

  const char *input_names[] = {argv[2]}, *output_names[] = {argv[5]};
  const int runs = atoi(argv[8]);
  typedef OrtStatus *(*run_fn)(void *, const void *, const char *const *, void *const *, size_t, const char *const *,
                               size_t, void **);
  for (int i = 0; i < runs; ++i) {
    output = NULL;  // each run allocates its output, as a user's loop would
    check(FN(RUN, run_fn)(session, NULL, input_names, &input, 1, output_names, 1, &output), "Run");
  }
  float *values;
  check(FN(GET_TENSOR_MUTABLE_DATA, OrtStatus *(*)(void *, void **))(output, (void **)&values), "GetTensorMutableData");
  FILE *out = fopen(argv[6], "wb");
  const size_t count = (size_t)atoll(argv[7]);
  if (!out || fwrite(values, sizeof(float), count, out) != count) return 1;
  fclose(out);

  if (write_maps(argv[9])) return 1;
  return 0;  // the session and values are released by the process's exit
}
