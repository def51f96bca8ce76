"""A third-party mindplug plugin: installing this distribution is all it takes to appear in `mindplug list`."""
from setuptools import setup

setup(
    name="mindplug-example",
    version="0.1.0",
    description="A mindplug plugin: a model, an optimizer, a schedule, a loss, an augmentation and a dataset",
    packages=["mindplug_example"],
    python_requires=">=3.9",
    install_requires=["mindplug"],
    entry_points={"mindplug.plugins": ["example = mindplug_example"]},
)
