"""The one compiled part: OATH framing's kernel (the project's metadata is in pyproject.toml).

No NumPy headers: the kernel takes buffers. No fast-math and no float contraction, so its
float32 arithmetic is NumPy's to the bit (the tests compare it with the NumPy path).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "aurora_pipeline.ingest._oath_framing",
    ["aurora_pipeline/ingest/_oath_framing.c"],
    extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Werror=implicit-function-declaration"],
)])
