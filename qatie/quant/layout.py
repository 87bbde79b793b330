"""Which tensors of the network are quantized, and which stay float — in one place.

docs/design.md, "The quantization scheme": whatever is int8 at a kernel boundary on the device
is fake-quantized at the same point, with the same parameters, during QAT. The model's blocks name their quantizers after the
roles below, and `tests/test_quant.py` checks that the model has exactly these roles, so this
table and the network cannot drift apart.
"""

WEIGHTS = "int8, symmetric (zero point 0), per output channel (axis 0 of OIHW), scale = max|w| / 127"
BIAS = "float in the QDQ graph; the compiler folds it into the int32 accumulator (scale s_x * s_w[c])"

# role -> what the quantizer holds. Activations are int8 per tensor, affine (scale + zero point).
ACTIVATION_ROLES: dict[str, str] = {
    "input": "network input image; fixed grid, zero point -128, scale 2^-8 (power-of-two scales) or 1/255",
    "conv_a": "gated encoder: output of conv a, before tanh",
    "conv_b": "gated encoder: output of conv b, before tanh",
    "tanh": "gated encoder: tanh(a) and tanh(b); one quantizer for both so concat(ta, tb) is exact",
    "gate": "gated encoder: the gate tanh(a) * tanh(b)",
    "conv_u": "refinement: output of the first 3x3 conv, before InstanceNorm",
    "k": "refinement: u = lrelu(instnorm(.)), v = conv1x1(x) and k = concat(u, v), one shared quantizer",
    "z1": "refinement: lrelu(conv3x3(k)) (conv + LeakyReLU fuse into one integer kernel)",
    "z2": "refinement: lrelu(conv3x3(z1))",
    "side": "refinement: the 1x1 shortcut conv1x1(k)",
    "out": "refinement: z2 + side (block output)",
    "up": "up block: conv3x3 after the nearest resize",
    "cat": "decoder: concat(up, skip, ta, tb) before the 1x1 fuse conv",
    "fuse": "decoder: output of the 1x1 fuse conv",
    "head": "output conv3x3 c->3 (the predicted residual)",
    "output": "final image clamp(x + head, 0, 1); fixed 8-bit image levels (scale 1/255, zero point -128)",
}

# Ops whose inputs/outputs are quantized but which stay exact on int8 values: the quantizer of
# their input is applied again to their output (a no-op on values; it gives every conv a
# DequantizeLinear input and lets the compiler cancel the Q->DQ pair).
EXACT_ON_INT8 = ("max-pool 2x2", "nearest resize", "concat of tensors sharing one quantizer")

# Computed in float between a DequantizeLinear and a QuantizeLinear.
FLOAT_OPS = (
    "tanh (gated encoder)",
    "gate multiply tanh(a) * tanh(b)",
    "InstanceNorm statistics and affine, and the LeakyReLU after it",
    "residual add z2 + side in refinement blocks",
    "concat of decoder tensors with different scales (requantized to 'cat')",
    "final residual add x + head and clamp to [0, 1]",
)

INT8_MIN, INT8_MAX = -128, 127
IMAGE_SCALE, IMAGE_ZERO_POINT = 1.0 / 255.0, -128
# With power-of-two scales the input grid is 2^-8 too, so that the first conv is exact like the
# others (an 8-bit image v/255 lands on level round(v * 256 / 255); 254 and 255 share the top).
# The output grid stays 1/255: nothing is computed from it, and 255 must mean 1.0.
POW2_INPUT_SCALE = 2.0**-8
