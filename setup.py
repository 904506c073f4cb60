"""Build hook for knnclass's one native part: the fused onnxruntime ops (_fusedops.c).

Everything else is in pyproject.toml. The extension is optional: where it cannot be
compiled, knnclass runs the same int8 graphs with stock onnxruntime ops, only slower.
"""

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    flags = ["/O2", "/fp:precise"]
else:
    # -fopenmp-simd: only the `omp simd` loop pragmas (no OpenMP runtime);
    # no errno / trap semantics, so the math loops vectorise.
    # -Wno-psabi: 64-byte vector values only pass between inlined static helpers.
    flags = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-fvisibility=hidden", "-Wno-psabi"]

setup(
    ext_modules=[
        Extension(
            "knnclass.encoders._fusedops",
            sources=["knnclass/encoders/_fusedops.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
