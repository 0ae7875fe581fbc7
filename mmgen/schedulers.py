"""The noise schedulers of the diffusion models: diffusers' schedulers chosen by name, built
once here for both the training loss (mmgen.models.ddpm adds noise with "ddpm") and sampling
(mmgen.pipelines.ddpm steps with any of them)."""
from __future__ import annotations

SCHEDULERS = ("ddpm", "ddim", "dpm++", "euler")
PREDICTIONS = ("eps", "v", "x0")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_DIFFUSERS_PRED = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def make_scheduler(name: str, *, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2",
                   prediction: str = "eps", clip_sample: bool = True):
    """A diffusers scheduler by name: ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M) or euler.
    Timesteps are spaced 'trailing' so few-step sampling starts from pure noise."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                  prediction_type=_DIFFUSERS_PRED[prediction], timestep_spacing="trailing")
    if name == "ddpm":
        return DDPMScheduler(clip_sample=clip_sample, variance_type="fixed_small", **common)
    if name == "ddim":
        return DDIMScheduler(clip_sample=clip_sample, set_alpha_to_one=True, **common)
    if name == "dpm++":
        # clip_sample's counterpart: threshold x0 to [-1, 1] (with sample_max_value=1 the dynamic
        # threshold is plain clipping); without it the first steps of a cosine schedule, where
        # alpha_t ~ 0, blow x0 = (x - sigma eps) / alpha up.
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
                                           thresholding=clip_sample, sample_max_value=1.0, **common)
    return EulerDiscreteScheduler(**common)
