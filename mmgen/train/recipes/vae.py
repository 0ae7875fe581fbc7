"""Recipes for the VAE / VQ family (mmgen.models.vae, mmgen.models.vq): the image tokenizers
the DALL-E generator reads (vq_shapes, vq_emoji) and a Gaussian VAE on animal-mnist.

Sized for a shared 2-core CPU: one thread (OMP_NUM_THREADS=1 is ~20x more work per CPU
second than two threads there), batch 32, ~1,500 steps (about 5 CPU minutes); the
`expected` strings give what such a run reached (test split, scripts/ae_report.py)."""
from . import Recipe, register_recipe

_SCHEDULE = dict(steps=1500, batch_size=32, lr=2e-3, min_lr=1e-4, warmup=50, weight_decay=0.0, clip=1.0,
                 save_every=100, sample_every=500, num_samples=16, log_every=50, eval_batches=8)

register_recipe(Recipe(
    name="vq_shapes", model="vq_32", data="shapes", train=dict(_SCHEDULE),
    description="VQ-VAE tokenizer for the shapes dataset: 32 px -> 8x8 tokens from 512 EMA codes "
                "(used by the DALL-E generator)",
    expected="test PSNR 27.4 dB, codebook usage 100% (perplexity 403); ~235 CPU s, 1 thread, shared 2-core CPU"))

# The tokenizer for a DALL-E that composes: 2x2-pixel tokens keep the edges the strict shapes
# checker reads (vq_32's 4x4-pixel tokens turn most small crosses into blobs).
register_recipe(Recipe(
    name="vq_shapes_16x16", model="vq_32_16x16", data="shapes", data_kwargs=dict(holdout="default"),
    train=dict(steps=1250, batch_size=32, lr=1e-3, min_lr=5e-5, warmup=50, weight_decay=0.0, clip=1.0,
               val_split="val", eval_every=1000, eval_batches=4, log_every=100, save_every=0,
               save_every_minutes=3.0),
    description="VQ-VAE tokenizer for shapes at 16x16 tokens (512 EMA codes): what a prompt asks for survives "
                "the round trip (checkpoints/vq_shapes_16x16)",
    expected="strict checker on reconstructions: 99.9 % of 1,000 test and 99.0 % of 1,000 heldout_test scenes "
             "all correct; PSNR 36.0 / 33.8 dB; codebook usage 100 % / 99.8 %; ~25 min on a shared 2-core CPU "
             "(measured at step 1,230 of a 4,000-step cosine schedule: `scripts/ae_report.py`)"))

register_recipe(Recipe(
    name="vq_emoji", model="vq_32", data="emoji", data_kwargs=dict(image_size=32), train=dict(_SCHEDULE),
    description="VQ-VAE tokenizer for 32 px emoji: 8x8 tokens from 512 EMA codes",
    expected="test PSNR 21.8 dB, codebook usage 100% (perplexity 428); ~230 CPU s, 1 thread, shared 2-core CPU"))

register_recipe(Recipe(
    name="dvae_shapes", model="dvae_32", data="shapes",
    model_overrides=dict(gumbel_anneal_steps=1200, gumbel_kl_warmup=300), train=dict(_SCHEDULE),
    description="DALL-E-style Gumbel-softmax dVAE on shapes (temperature 1 -> 1/16)",
    expected="600 steps (--set train.steps=600 model.gumbel_anneal_steps=500 model.gumbel_kl_warmup=150): test PSNR 21.4 dB but only 8% codebook usage (collapse); 133 CPU s"))

register_recipe(Recipe(
    name="vae_animal_mnist", model="vae_32", data="animal_mnist", model_overrides=dict(kl_warmup_steps=300),
    train=dict(_SCHEDULE),
    description="Gaussian VAE on animal-mnist: latents (4, 8, 8), discretised Gaussian decoder, bits/dim",
    expected="test 1.41 bits/dim (recon 1.29 + KL 0.12), PSNR 28.3 dB; ~230 CPU s, 1 thread, shared 2-core CPU"))

register_recipe(Recipe(
    name="vae_shapes", model="vae_32", data="shapes", model_overrides=dict(kl_warmup_steps=300),
    train=dict(_SCHEDULE),
    description="Gaussian VAE on shapes: latents (4, 8, 8), the space of the latent diffusion run (ddpm_shapes_latent)",
    expected="measured in docs/ddpm.md (strict checker on reconstructions)"))

# The latent diffusion run's space: vae_shapes' 4x4-pixel latents lose 5 % of crosses before
# any diffusion; 2x2-pixel latents (the grid of vq_shapes_16x16) keep them.
register_recipe(Recipe(
    name="vae_shapes_f2", model="vae_32_f2", data="shapes", data_kwargs=dict(holdout="default"),
    model_overrides=dict(kl_warmup_steps=300), train={**_SCHEDULE, "steps": 4000},
    description="Gaussian VAE on shapes with (4, 16, 16) latents: the space of ddpm_shapes_latent_f2",
    expected="about 14 min on 2 threads; strict checker on reconstructions: 96.9 % of 1,000 test and 94.3 % of "
             "heldout_test scenes all correct (15 of 378 triangles lost), PSNR 40.6 / 37.0 dB"))
