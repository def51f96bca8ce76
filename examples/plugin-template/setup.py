"""An external mindplug plugin: installing this distribution is all it takes to appear in `mindplug list`."""
from setuptools import setup

setup(
    name="mindplug-example",
    version="0.1.0",
    description="Example third-party plugin for mindplug: a model, an optimizer and an augmentation",
    packages=["mindplug_example"],
    python_requires=">=3.9",
    install_requires=["mindplug"],
    entry_points={"mindplug.plugins": ["example = mindplug_example"]},
)
