"""Validate a checkpoint, as the seed's README types it:

    python validate.py -c configs/googlenet/googlenet_ascend.yaml --data_dir /path/to/imagenet --ckpt_path /path/to/ckpt
"""
from mindplug.engine.cli import main_script

if __name__ == "__main__":
    main_script("validate")
