"""Build and install mindplug: three source folders mapped onto one import namespace, plus the kernels."""
from __future__ import annotations

import os

from setuptools import setup

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
    package_data={"mindplug": ["py.typed"], "mindplug.plugins": ["*/data/*", "*/data/**/*"],
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
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6", "onnx", "onnxruntime", "matplotlib", "decorator"],
    },
    entry_points={
        "console_scripts": ["mindplug = mindplug._cli:main"],
        "mindplug.plugins": BUILTIN_PLUGINS,
    },
    zip_safe=False,
)
