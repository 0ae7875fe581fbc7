"""Image classification recipes for the ViT and Swin encoders: crop (reflect-pad 4) + flip
augmentation, label smoothing 0.1, AdamW with linear warm-up and cosine decay, evaluated on
the whole test split. The animal-mnist runs fit a ~7 min budget on the shared 2-core CPU;
the CIFAR-10 ones are the same recipe, longer, for when CIFAR-10 is on disk (`--data-set
root=DIR`, or `download=true`)."""
from __future__ import annotations

from . import Recipe, register_recipe

_CLS = dict(augment="crop_flip", label_smoothing=0.1)
_SCHED = dict(lr=2e-3, min_lr=1e-5, warmup=30, weight_decay=0.05, clip=1.0, schedule="cosine", log_every=10,
              val_split="test", save_every=0, eval_every=0)
_TEST_ALL = dict(batch_size=32, eval_batches=32)  # 32 x 32 >= the 1,000 test images of animal-mnist

register_recipe(Recipe(
    name="vit_tiny_animal_mnist", model="vit_tiny_patch4_32", data="animal_mnist",
    model_overrides=_CLS, train={**_SCHED, **_TEST_ALL, "steps": 400},
    description="ViT (0.8M, patch 4, 32 px) on animal-mnist (padded to 32 px, 3 channels), 400 steps x 32, fp32",
    expected="test accuracy 49.5 % (loss 1.402) on the 1,000 test images; 503 s on a shared 2-core CPU "
             "(docs/vision.md)"))

register_recipe(Recipe(
    name="swin_tiny_animal_mnist", model="swin_tiny_patch2_window4_32", data="animal_mnist",
    model_overrides=_CLS, train={**_SCHED, **_TEST_ALL, "steps": 400, "amp": "bf16"},
    description="Swin (1.3M, patch 2, window 4, 32 px) on animal-mnist, 400 steps x 32, bf16 autocast "
                "(1.5x faster than fp32 on this CPU; ViT-tiny gains nothing from it)",
    expected="test accuracy 57.2 % (loss 1.222) on the 1,000 test images; 487 s on a shared 2-core CPU "
             "(docs/vision.md)"))

register_recipe(Recipe(
    name="vit_small_cifar10", model="vit_small_patch4_32", data="cifar10",
    model_overrides={**_CLS, "drop_path": 0.1}, train={**_SCHED, "lr": 1e-3, "batch_size": 128, "warmup": 500,
                                                      "steps": 20_000, "eval_every": 2000, "eval_batches": 79},
    description="ViT (2.7M, patch 4) on CIFAR-10, ~51 epochs (a GPU job: not run on the CPU box)",
    expected="not run here (no CIFAR-10 on this machine)"))

register_recipe(Recipe(
    name="swin_tiny_cifar10", model="swin_tiny_patch2_window4_32", data="cifar10",
    model_overrides={**_CLS, "drop_path": 0.1}, train={**_SCHED, "lr": 1e-3, "batch_size": 128, "warmup": 500,
                                                      "steps": 20_000, "eval_every": 2000, "eval_batches": 79},
    description="Swin (1.3M, patch 2, window 4) on CIFAR-10, ~51 epochs (a GPU job: not run on the CPU box)",
    expected="not run here (no CIFAR-10 on this machine)"))
