"""Export's side of TensorRT: refuse ``--trt`` early where TensorRT is missing, and build engines
through the deploy side's builder (:mod:`deploy.engine_build`: an engine is built on the device
that runs it, so the builder lives with deploy; export -> deploy is the allowed import direction).
"""

from __future__ import annotations

from rdd_edge.errors import MissingDependencyError
from rdd_edge.extras import install_hint

from rdd_edge.deploy.engine_build import INSTALL_HINT, available, build_engine  # noqa: F401  (export's engine API)


def require_tensorrt(what: str = "TensorRT engines", on_device: bool = False) -> None:
    """Fail before any work when engines are asked for on a machine without TensorRT.

    ``on_device``: the caller is ``rdd-edge engine`` itself, so the advice is what to install here,
    not to build on the device later."""
    if available():
        return
    if on_device:
        raise MissingDependencyError(
            f"{what}: TensorRT is not installed here. Jetson: JetPack's TensorRT (sudo apt-get install nvidia-jetpack, "
            "which brings python3-libnvinfer) in a venv made with --system-site-packages (a bundle's install.sh does "
            f"this); desktop GPU: {install_hint('trt')}")
    raise MissingDependencyError(
        f"{what}: TensorRT is not installed here: {install_hint('trt')} (on Jetson it comes with JetPack); "
        "or export without --trt and build the engines on the device with `rdd-edge engine`")
