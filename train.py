"""Train a model from a recipe, as the seed's README types it:

    python train.py --config configs/googlenet/googlenet_ascend.yaml --data_dir /path/to/imagenet [--distribute False]
    msrun --worker_num 2 --local_worker_num 2 python train.py --config ... --data_dir ...
"""
from mindplug.engine.cli import main_script

if __name__ == "__main__":
    main_script("train")
