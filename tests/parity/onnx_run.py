"""Runs an ONNX model in onnxruntime (the reference runtime for what prunex
exports).

    onnx_run.py MODEL.onnx IN.safetensors OUT.safetensors

reads the input `x` from IN and writes the output `y` to OUT.
"""

import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file, save_file

model, inp, out = sys.argv[1:4]
x = load_file(inp)["x"].astype(np.float32)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
(y,) = session.run(None, {session.get_inputs()[0].name: x})
save_file({"y": np.ascontiguousarray(y)}, out)
