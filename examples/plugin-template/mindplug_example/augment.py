"""An augmentation that is a plain Python callable on uint8 HWC images (it keeps that type)."""
import numpy as np


class RandomInvert:
    def __init__(self, prob: float = 0.5, seed=None) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"random_invert: prob must be in [0, 1], got {prob}")
        self.prob = prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return 255 - image if self.rng.random() < self.prob else image


def random_invert(prob: float = 0.5, seed=None) -> RandomInvert:
    """Invert the image with probability prob."""
    return RandomInvert(prob, seed)
