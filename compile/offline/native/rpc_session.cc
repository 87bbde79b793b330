// One TVM RPC session on an already-accepted socket, for an aarch64 Linux device.
//
// The host-side supervisor (`qatie-compile emulate arm64`, compile/offline/emulator.py) talks to
// the tracker, accepts the client and does TVM's handshake, then runs this program under
// qemu-aarch64 with the socket as an inherited file descriptor. Everything the client does
// (upload, load, run, time) therefore executes in the aarch64 TVM runtime from the pip wheel,
// on the CPU model qemu emulates. Kept to what TVM's runtime cannot provide by itself: the
// server-side globals its RPC protocol expects, and the CPU's feature bits, so a client can
// refuse a library the CPU cannot execute instead of dying with SIGILL, and the process's memory
// map, so `qatie-compile estimate` can place executed code in the libraries it loaded.
//
// Usage: qatie_rpc_session SOCKET_FD WORK_DIR [EMULATION]
// EMULATION (e.g. "qemu-aarch64 -cpu cortex-a53") is what clients label timings with: latency
// measured under an emulator says nothing about a device and must never be reported as one.
#include <sys/auxv.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace ffi = tvm::ffi;

// Linux arm64 hwcap bits (arch/arm64/include/uapi/asm/hwcap.h), named by their LLVM feature.
static std::string CpuFeatures() {
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  std::string features = "+neon";
  if (hwcap & (1UL << 20)) features += ",+dotprod";   // HWCAP_ASIMDDP
  if (hwcap & (1UL << 9)) features += ",+fullfp16";   // HWCAP_ASIMDHP
  if (hwcap & (1UL << 22)) features += ",+sve";       // HWCAP_SVE
  if (hwcap2 & (1UL << 13)) features += ",+i8mm";     // HWCAP2_I8MM
  return features;
}

// MetaSchedule's RPC runner fills kernel arguments with TVM's contrib
// `random_fill_for_measure`, which the runtime library leaves out. Timing only needs valid
// values: floats in [0, 1), other types random bytes (a CPU device's memory is host memory).
static void RandomFill(ffi::TensorView tensor) {
  std::mt19937 generator(0);
  char* data = static_cast<char*>(tensor.data_ptr()) + tensor.byte_offset();
  const DLDataType dtype = tensor.dtype();
  if (dtype.code == kDLFloat && dtype.bits == 32) {
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    for (int64_t i = 0; i < tensor.numel() * dtype.lanes; ++i) {
      const float value = uniform(generator);
      std::memcpy(data + i * sizeof(float), &value, sizeof(float));
    }
    return;
  }
  for (size_t i = 0; i < ffi::GetDataSize(tensor); ++i) data[i] = static_cast<char>(generator());
}

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s SOCKET_FD WORK_DIR [EMULATION]\n", argv[0]);
    return 2;
  }
  const int fd = std::atoi(argv[1]);
  const std::string work_dir = argv[2];
  const std::string emulation = argc == 4 ? argv[3] : "";
  auto work_path = [work_dir](ffi::String name) { return ffi::String(work_dir + "/" + std::string(name)); };
  ffi::Function::SetGlobal("tvm.rpc.server.workpath", ffi::Function::FromTyped(work_path));
  ffi::Function::SetGlobal("tvm.rpc.server.load_module", ffi::Function::FromTyped([work_path](ffi::String name) {
    return ffi::Module::LoadFromFile(work_path(name));
  }));
  ffi::Function::SetGlobal("qatie.device.cpu_features",
                           ffi::Function::FromTyped([]() { return ffi::String(CpuFeatures()); }));
  ffi::Function::SetGlobal("qatie.device.arch", ffi::Function::FromTyped([]() { return ffi::String("aarch64"); }));
  ffi::Function::SetGlobal("tvm.contrib.random.random_fill_for_measure", ffi::Function::FromTyped(RandomFill));
  // Under qemu-user this is the guest's view (qemu emulates the file): the addresses its plugins see.
  ffi::Function::SetGlobal("qatie.device.maps", ffi::Function::FromTyped([]() {
    std::ostringstream text;
    text << std::ifstream("/proc/self/maps").rdbuf();
    return ffi::String(text.str());
  }));
  ffi::Function::SetGlobal("qatie.device.emulation",
                           ffi::Function::FromTyped([emulation]() { return ffi::String(emulation); }));
  ffi::Function::GetGlobalRequired("rpc.ServerLoop")(fd);
  return 0;
}
