"""Per-layer precision from the engine inspector's JSON (fixtures shaped like NVIDIA's documented
layer information: TensorRT 10 "Format/Datatype" text per tensor, TensorRT 11 "Format" + "DataType")."""

from __future__ import annotations

import json

import pytest

from rdd_edge.errors import DeployError

from rdd_edge.deploy.engine_meta import layer_precision, layer_precisions, precision_summary

# TensorRT 10.x, ProfilingVerbosity.DETAILED (keys as in the Engine Inspector docs and trtexec --exportLayerInfo)
TRT10 = {
    "Layers": [
        {"Name": "images_cast", "LayerType": "Reformat",
         "Inputs": [{"Name": "images", "Location": "Device", "Dimensions": [1, 3, 48, 64], "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "images_q", "Location": "Device", "Dimensions": [1, 3, 48, 64],
                      "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "ParameterType": "Reformat", "Origin": "QDQ", "TacticValue": "0x0000000000000000", "StreamId": 0, "Metadata": ""},
        {"Name": "/backbone/conv1/Conv + /backbone/relu/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "images_q", "Location": "Device", "Dimensions": [1, 3, 48, 64],
                     "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
         "Outputs": [{"Name": "c1", "Location": "Device", "Dimensions": [1, 32, 24, 32],
                      "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "ParameterType": "Convolution", "Kernel": [3, 3], "TacticName": "sm87_xmma_fprop_implicit_gemm_interleaved_i8f16",
         "StreamId": 0, "Metadata": "[ONNX Layer: /backbone/conv1/Conv]"},
        {"Name": "/head/Resize", "LayerType": "Resize",
         "Inputs": [{"Name": "c1", "Location": "Device", "Dimensions": [1, 11, 24, 32],
                     "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Name": "logits", "Location": "Device", "Dimensions": [1, 11, 48, 64], "Format/Datatype": "Row major linear FP16 format"}],
         "StreamId": 0, "Metadata": "[ONNX Layer: /head/Resize]"},
        {"Name": "/ArgMax", "LayerType": "TopK",
         "Inputs": [{"Name": "logits", "Location": "Device", "Dimensions": [1, 11, 48, 64], "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "labels", "Location": "Device", "Dimensions": [1, 48, 64], "Format/Datatype": "Row major linear Int64"}]},
        {"Name": "shape_const", "LayerType": "Constant", "Inputs": [],
         "Outputs": [{"Name": "s", "Location": "Device", "Dimensions": [2], "Format/Datatype": "Row major linear Int32"}]},
    ],
    "Bindings": ["images", "logits", "labels"],
}

# TensorRT 11.x: the tensor type moved to "DataType" ("Format" keeps the layout); "I/O Tensors" replaced "Bindings"
TRT11 = {
    "Layers": [
        {"Name": "conv", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "x", "Dimensions": [1, 3, 48, 64], "Format": "Thirty-two wide channel vectorized row major format", "DataType": "Int8"}],
         "Outputs": [{"Name": "y", "Dimensions": [1, 8, 48, 64], "Format": "Row major linear format", "DataType": "Half"}]},
        {"Name": "relu", "LayerType": "PointWiseV2",
         "Inputs": [{"Name": "y", "Dimensions": [1, 8, 48, 64], "Format": "Row major linear format", "DataType": "Half"}],
         "Outputs": [{"Name": "z", "Dimensions": [1, 8, 48, 64], "Format": "Row major linear format", "DataType": "Half"}]},
        {"Name": "head", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "z", "Dimensions": [1, 8, 48, 64], "Format": "Row major linear format", "DataType": "Float"}],
         "Outputs": [{"Name": "logits", "Dimensions": [1, 4, 48, 64], "Format": "Row major linear format", "DataType": "Float"}]},
        {"Name": "bf", "LayerType": "PointWiseV2",
         "Inputs": [{"Name": "q", "DataType": "BFloat16"}], "Outputs": []},
    ],
    "I/O Tensors": [{"Name": "x", "IOMode": "Input", "DataType": "Float"}],
}


def test_trt10_layer_information():
    counts = layer_precisions(json.dumps(TRT10))
    # reformat (FP32 in), INT8 conv, FP16 resize, FP32 argmax, int32 constant
    assert counts == {"int8": 1, "fp16": 1, "fp32": 2, "int32": 1}
    assert layer_precision(TRT10["Layers"][1]) == "int8"
    assert precision_summary({"precision_layers": counts}) == "INT8 1, FP16 1, FP32 2, INT32 1 layers"


def test_trt11_layer_information():
    counts = layer_precisions(TRT11)
    assert counts == {"int8": 1, "fp16": 1, "fp32": 1, "bf16": 1}
    assert precision_summary({"precision_layers": counts}) == "INT8 1, FP16 1, FP32 1, BF16 1 layers"


def test_names_only_and_bad_input():
    # ProfilingVerbosity.LAYER_NAMES_ONLY: layers are bare names
    assert layer_precisions({"Layers": ["a", "b"], "Bindings": []}) == {"int8": 0, "fp16": 0, "fp32": 0, "unknown": 2}
    assert layer_precisions([TRT10["Layers"][2]]) == {"int8": 0, "fp16": 1, "fp32": 0}  # a bare list
    assert precision_summary({"precision_layers": {"int8": 41, "fp16": 12, "fp32": 0}}) == "INT8 41, FP16 12, FP32 0 layers"
    assert "unknown" in precision_summary({}) and "unknown" in precision_summary({"precision_layers": None})
    with pytest.raises(DeployError, match="not JSON"):
        layer_precisions("Layer(CaskConvolution): conv, Tactic: 0x1")
    with pytest.raises(DeployError, match="Layers"):
        layer_precisions({"Bindings": []})
