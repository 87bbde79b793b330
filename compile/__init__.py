"""qatie-compile: QDQ ONNX -> TVM (Relax) int8 kernels, per mobile target."""
