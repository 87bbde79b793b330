"""Offline stand-ins for devices: OpenCL kernels compiled and run on PoCL, and an aarch64
device emulated under qemu with TVM's own aarch64 runtime."""
