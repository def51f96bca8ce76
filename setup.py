"""Build and install mindplug: three source folders mapped onto one import namespace, plus the kernels."""
from __future__ import annotations

import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOTS = {"mindplug": "core", "mindplug.plugins": "plugins", "mindplug.ops": "ops"}
HERE = os.path.dirname(os.path.abspath(__file__))


def _packages() -> list[str]:
    found = []
    for package, folder in ROOTS.items():
        base = os.path.join(HERE, folder)
        for dirpath, _dirs, files in os.walk(base):
            if "__init__.py" in files:
                rel = os.path.relpath(dirpath, base)
                found.append(package if rel == "." else package + "." + rel.replace(os.sep, "."))
    return sorted(found)


# The built-in plugins register exactly as a third-party distribution would.
BUILTIN_PLUGINS = [
    "googlenet = mindplug.plugins.googlenet",
    "optimizers = mindplug.plugins.optimizers",
    "schedulers = mindplug.plugins.schedulers",
    "losses = mindplug.plugins.losses",
    "augmentations = mindplug.plugins.augmentations",
    "datasets = mindplug.plugins.datasets",
]


def _kernel_extension() -> Extension:
    """The C++ kernels (ops/csrc) as one plain shared library loaded by MindSpore's AOT Custom ops.

    Portable flags only (ISA-specific code is chosen at run time); MINDPLUG_SANITIZE=1 builds with
    AddressSanitizer + UBSan for the kernel tests (see ops/csrc/README.md).
    """
    compile_args = ["-std=c++17", "-O3", "-fopenmp", "-fvisibility=hidden", "-D_GLIBCXX_USE_CXX11_ABI=0",
                    "-Wall", "-Wextra"]
    link_args = ["-fopenmp"]
    if os.environ.get("MINDPLUG_SANITIZE", "0") not in ("", "0"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined", "-g"]
        compile_args = [a for a in compile_args if a != "-O3"] + ["-O1"] + san
        link_args += san
    return Extension(
        "mindplug.ops.libmindplug_kernels",
        sources=sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "ops", "csrc", "*.cc"))),
        depends=sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "ops", "csrc", "*.h"))),
        language="c++",
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        libraries=["dl"],
    )


class BuildKernels(build_ext):
    """Names the library libmindplug_kernels.so: it is dlopen-ed by path, never imported by Python."""

    def get_ext_filename(self, ext_name: str) -> str:
        return os.path.join(*ext_name.split(".")) + ".so"


setup(
    name="mindplug",
    version="0.1.0",
    description="A MindSpore vision toolbox built as a plugin framework with a custom-op core",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir=ROOTS,
    packages=_packages(),
    package_data={"mindplug": ["py.typed", "engine/*.txt"], "mindplug.plugins": ["*/data/*", "*/data/**/*"],
                  "mindplug.ops": ["*.so"]},
    include_package_data=True,
    install_requires=[
        "mindspore==2.10.0",
        "numpy>=1.26,<2",
        "pluggy>=1.3",
        "pyyaml>=6",
        "pillow>=9",
        "packaging>=21",
        "tqdm>=4.60",
        "matplotlib>=3.5",
    ],
    extras_require={
        # test-only: onnx/onnxruntime check exports, mindcv 0.3.0 is the reference the bridge and kernels test against
        "dev": ["pytest>=7", "hypothesis>=6", "onnx", "onnxruntime", "decorator", "mindcv==0.3.0"],
    },
    entry_points={
        "console_scripts": ["mindplug = mindplug._cli:main"],
        "mindplug.plugins": BUILTIN_PLUGINS,
    },
    ext_modules=[_kernel_extension()],
    cmdclass={"build_ext": BuildKernels},
    zip_safe=False,
)
