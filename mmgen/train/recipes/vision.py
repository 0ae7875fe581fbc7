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

# Equal-time budgets on animal-mnist, counted in optimizer steps so that a run's result does not
# depend on how busy the machine is: ResNet-18 trains at RESNET18_STEPS_PER_S (batch 32, bf16
# autocast) on a quiet 2-core CPU, and every model gets budget_s x its own quiet rate, which is
# that rate times its throughput ratio to ResNet-18 measured interleaved in one process
# (`python -m bench vision_train`). See docs/vision.md, "Equal wall time".
RESNET18_STEPS_PER_S = 2.0
BUDGETS_S = {"1min": 60, "10min": 600}


def budget_steps(ratio_to_resnet18: float, budget_s: float) -> int:
    """Optimizer steps a model with the given training-throughput ratio to ResNet-18 gets in budget_s
    quiet-machine seconds."""
    return max(1, round(budget_s * RESNET18_STEPS_PER_S * ratio_to_resnet18))


def _evals(steps: int, n: int) -> int:
    """eval_every giving about n evaluations over a run (the curve), at least one step apart."""
    return max(1, steps // n)


# The equal-time comparison: (label, preset, amp, peak lr, training-throughput ratio to ResNet-18
# on one thread, from `python -m bench vision_train`, 30 interleaved rounds). Each gets an
# "<key>_animal_mnist" recipe (10 min) and "<key>_animal_mnist_1min", both evaluated on the
# whole test split along the way. ResNet-18 keeps the baseline's schedule (AdamW 2e-3); the
# transformers train best at 1e-3 (1-minute ablation in docs/vision.md).
EQUAL_TIME_MODELS = {
    "resnet18": ("ResNet-18", "resnet18_cifar", "bf16", 2e-3, 1.0),
    "vit_cct": ("ViT, CCT tokenizer", "vit_tiny_cct_patch4_32", "bf16", 1e-3, 3.98),
    "swin_conv": ("Swin, conv stem", "swin_tiny_conv_patch2_window4_32", "bf16", 1e-3, 4.62),
    "vit_conv": ("ViT, conv stem", "vit_tiny_conv_patch4_32", "bf16", 1e-3, 5.88),
    # measured while another training shared the CPU; quiet: 13.5 (its runs get ~80 % of equal time)
    "swin_p4": ("Swin, conv stem, patch 4", "swin_tiny_conv_patch4_window4_32", "bf16", 1e-3, 10.87),
}
# measured (seed 0 unless stated, test accuracy over the 1,000 test images; docs/vision.md)
_EXPECTED = {
    "resnet18_animal_mnist_1min": "84.4 % test accuracy (seeds 0 / 1 / 2: 84.4 / 84.5 / 81.9 %, mean 83.6 %)",
    "resnet18_animal_mnist": "97.9 % test accuracy",
    "vit_cct_animal_mnist_1min": "82.3 % test accuracy",
    "vit_cct_animal_mnist": "97.5 % test accuracy",
    "swin_conv_animal_mnist_1min": "76.6 % test accuracy",
    "swin_conv_animal_mnist": "96.4 % test accuracy",
    "vit_conv_animal_mnist_1min": "83.7 % test accuracy (seeds 0 / 1 / 2: 83.7 / 86.6 / 85.3 %, mean 85.2 %)",
    "vit_conv_animal_mnist": "98.2 % test accuracy (97.4 % validation)",
    "swin_p4_animal_mnist_1min": "88.2 % test accuracy (85.8 % validation)",
    "swin_p4_animal_mnist": "99.0 % test accuracy (97.8 % validation)",
}
CURVE_RECIPES: dict[str, tuple[str, float]] = {}  # recipe -> (label, ratio): what mmgen.metrics.vision_curve plots

for _key, (_label, _preset, _amp, _lr, _ratio) in EQUAL_TIME_MODELS.items():
    for _budget, _s in BUDGETS_S.items():
        _steps = budget_steps(_ratio, _s)
        _name = f"{_key}_animal_mnist" + ("" if _budget == "10min" else f"_{_budget}")
        register_recipe(Recipe(
            name=_name, model=_preset, data="animal_mnist", model_overrides=_CLS,
            train={**_SCHED, **_TEST_ALL, "steps": _steps, "amp": _amp, "lr": _lr,
                   "eval_every": _evals(_steps, 10 if _budget == "10min" else 2)},
            description=f"{_label} on animal-mnist at equal time: {_steps} steps x 32 = {_s // 60} min on a quiet "
                        f"2-core CPU ({_ratio:g}x ResNet-18's steps/s), AdamW {_lr:g}, {_amp} autocast",
            expected=_EXPECTED[_name] + " (docs/vision.md: accuracy against training minutes)"))
        CURVE_RECIPES[_name] = (_label, _ratio)

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

register_recipe(Recipe(
    name="vit_cct_cifar10", model="vit_cct7_3x1_32", data="cifar10",
    model_overrides=_CLS, train={**_SCHED, "lr": 5.5e-4, "weight_decay": 0.06, "batch_size": 128, "warmup": 3900,
                                 "steps": 117_000, "amp": "auto", "eval_every": 3900, "eval_batches": 79},
    description="CCT-7/3x1 on CIFAR-10: 300 epochs x 390 steps of 128, AdamW 5.5e-4, wd 0.06, 10 warm-up epochs, "
                "cosine, label smoothing 0.1, crop + flip (a GPU job)",
    expected="not run here. Literature (Hassani et al., 2021): CCT-7/3x1 95.0 % top-1 after 300 epochs with "
             "AutoAugment, mixup and CutMix; ViT-Lite-7/4 91.4 %. This recipe uses crop + flip only, so expect "
             "somewhat lower"))

register_recipe(Recipe(
    name="resnet18_cifar10", model="resnet18_cifar", data="cifar10",
    model_overrides=_CLS, train={**_SCHED, "lr": 2e-3, "batch_size": 128, "warmup": 390, "steps": 78_000,
                                 "amp": "auto", "eval_every": 3900, "eval_batches": 79},
    description="torchvision ResNet-18, CIFAR stem, on CIFAR-10: 200 epochs x 390 steps of 128, AdamW (a GPU job)",
    expected="not run here; ResNet-18 with a CIFAR stem is commonly reported at 93-95 % on CIFAR-10"))
