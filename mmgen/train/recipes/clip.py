"""CLIP recipes: shapes (text->image retrieval on held-out colour-shape pairs), animal-mnist
with class-template captions (zero-shot accuracy), emoji (CLDR names), and LiT (a locked
image tower, only the text tower trains). Sized for ~5 CPU minutes each on a shared 2-core
machine; results and commands are in docs/clip.md."""
from __future__ import annotations

from . import Recipe, register_recipe

# Small towers: a 2-block 64-wide ViT (patch 4, 32 px) and a 2-block 64-wide causal text
# transformer over a BPE vocabulary pruned to the captions (tens of tokens, not 49,408).
SMALL = dict(vision_model="vit_tiny_patch4_32", vision={"embed_dim": 64, "depth": 2, "num_heads": 2}, embed_dim=64,
             tokenizer="clip_bpe", text={"context_length": 16, "embed_dim": 64, "depth": 2, "num_heads": 2})

register_recipe(Recipe(
    name="clip_shapes", model="clip_tiny", data="shapes",
    model_overrides={**SMALL, "tokenizer_captions": "shapes:val",
                     "tokenizer_captions_kwargs": {"holdout": "default"}},
    data_kwargs={"holdout": "default"},
    train=dict(steps=600, batch_size=64, lr=2e-3, warmup=50, weight_decay=0.1, val_split="heldout_test",
               eval_batches=4, log_every=50, save_every=400),
    description="CLIP on shapes captions; six colour-shape pairs never seen in training",
    expected="text->image R@1 0.174 (R@10 0.590) on 1,000 heldout_test captions; 4.6 min on a shared 2-core CPU"))

# LiT (Zhai et al., 2022): the image tower and projection of the clip_shapes run, locked; a
# fresh text tower learns to read them. Run clip_shapes first (its --out is the path below).
register_recipe(Recipe(
    name="clip_shapes_lit", model="clip_tiny", data="shapes",
    model_overrides={**SMALL, "tokenizer_captions": "shapes:val", "tokenizer_captions_kwargs": {"holdout": "default"},
                     "init_image_from": "runs/clip_shapes", "lock_image": "tower_proj"},
    data_kwargs={"holdout": "default"},
    train=dict(steps=600, batch_size=64, lr=2e-3, warmup=50, weight_decay=0.1, val_split="heldout_test",
               eval_batches=4, log_every=50, save_every=400),
    description="LiT on shapes: the clip_shapes image tower and projection locked, only the text tower trains",
    expected="text->image R@1 0.218 (R@10 0.584) on heldout_test; 2.3 min on a shared 2-core CPU"))

# animal-mnist with the CLIP paper's 18 CIFAR templates as captions ("a blurry photo of the
# zebra."): label-aware loss, since two zebra captions in a batch are not negatives of each
# other. Zero-shot accuracy on the test split: `mmgen zero-shot --dataset animal_mnist`.
# 2,000 steps at lr 1e-3 with crop + flip: the lower rate matters most (lr 2e-3 for 1,500
# steps stays at zero-shot / linear probe = 0.83; docs/clip.md).
register_recipe(Recipe(
    name="clip_animal_mnist", model="clip_tiny", data="animal_mnist",
    model_overrides={**SMALL, "tokenizer_captions": "animal_mnist", "label_aware": True, "augment": "crop_flip"},
    train=dict(steps=2000, batch_size=64, lr=1e-3, warmup=100, weight_decay=0.1, val_split="test",
               eval_batches=4, log_every=100, eval_every=1000, save_every=0, save_every_minutes=3.0),
    description="CLIP on animal-mnist silhouettes with class-template captions (label-aware loss, crop + flip)",
    expected="zero-shot top-1 0.728 on the 1,000 test images, 0.953 x the linear probe of its image tower "
             "(0.764); 7.5 min on the shared 2-core CPU. Both: `mmgen zero-shot --dataset animal_mnist --probe "
             "--checkpoint DIR`"))

# Emoji: 2,923 training emoji (32 px) with their CLDR names; test emoji are other base emoji.
# The scorer and reranker of the emoji DALL-E and DDPM. The towers of the shapes reranker
# (96 wide; fixed 2D sin-cos positions, a mean-pooled text tower, so every word of a name
# reaches the embedding directly), its vocabulary the train names.
EMOJI = dict(vision_model="vit_tiny_patch4_32", vision={"embed_dim": 96, "depth": 4, "num_heads": 3, "pos": "sincos"},
             embed_dim=96, tokenizer="clip_bpe", tokenizer_captions="emoji", tokenizer_captions_kwargs={"image_size": 32},
             text={"context_length": 24, "embed_dim": 96, "depth": 3, "num_heads": 3, "pool": "mean"})
EMOJI_TRAIN = dict(steps=2000, batch_size=64, lr=1e-3, warmup=100, weight_decay=0.1, val_split="val", eval_batches=4,
                   eval_every=500, log_every=50, save_every=0, save_every_minutes=3.0)
register_recipe(Recipe(
    name="clip_emoji", model="clip_tiny", data="emoji",
    model_overrides=EMOJI,
    data_kwargs={"image_size": 32},
    train=EMOJI_TRAIN,
    description="CLIP on Noto emoji (32 px) captioned with CLDR names: 4-block ViT (sin-cos positions) and 3-block "
                "mean-pooled text tower, 96 wide",
    expected="366 test emoji (unseen base emoji): text->image R@1 0.273, R@10 0.538 (train names: 0.832 / 0.999); "
             "7.3 min on one thread (checkpoints/clip_emoji)"))

# A second emoji CLIP to judge samples with: clip_emoji reranks the emoji DALL-E's candidates,
# so scoring the chosen image with it too would count its own preferences as quality. Same
# recipe, another seed (initialisation and batch order).
register_recipe(Recipe(
    name="clip_emoji_judge", model="clip_tiny", data="emoji",
    model_overrides=EMOJI,
    data_kwargs={"image_size": 32},
    train={**EMOJI_TRAIN, "seed": 1},
    description="clip_emoji trained again from another seed: the judge of emoji samples that clip_emoji reranked",
    expected="366 test emoji: text->image R@1 0.320, R@10 0.555; 7.4 min on one thread "
             "(checkpoints/clip_emoji_judge)"))

# The reranker of the shapes DALL-E: it must read the whole prompt (which colour goes with
# which shape, above or below), which in-batch negatives rarely test. NegCLIP-style hard
# negatives (each image also scored against its caption with one binding changed:
# relation reversed, colours or shapes swapped, one attribute replaced; never a held-out
# pair) and wider, deeper towers.
RERANKER = dict(vision_model="vit_tiny_patch4_32", vision={"embed_dim": 96, "depth": 4, "num_heads": 3},
                embed_dim=96, tokenizer="clip_bpe", text={"context_length": 16, "embed_dim": 96, "depth": 3, "num_heads": 3},
                tokenizer_captions="shapes:val", tokenizer_captions_kwargs={"holdout": "default"}, hard_negatives=True)
RERANKER_TRAIN = dict(steps=2000, batch_size=64, lr=1e-3, warmup=100, weight_decay=0.1, val_split="heldout_test",
                      eval_batches=4, eval_every=500, log_every=50, save_every=0, save_every_minutes=3.0)
register_recipe(Recipe(
    name="clip_shapes_reranker", model="clip_tiny", data="shapes",
    model_overrides=RERANKER,
    data_kwargs={"holdout": "default", "negatives": True},
    train=RERANKER_TRAIN,
    description="shapes CLIP for reranking DALL-E samples: 4-block ViT and 3-block text tower (96 wide), "
                "hard-negative captions (NegCLIP); six colour-shape pairs never seen in training",
    expected="text->image R@1 0.414 (R@10 0.913) on 1,000 heldout_test captions; prefers the true caption over "
             "the colour-swapped one for 96.5 % of two-object scenes, over the relation-reversed one 51 % (chance); "
             "31.5 min on a shared 2-core CPU (checkpoints/clip_shapes_reranker)"))

# The reranker, second version. In clip_shapes_reranker the towers start almost blind to the
# relation: learned image positions at 0.02 std beside patch embeddings ~25x larger (mirrored
# scenes encode alike), and a text embedding that is the EOS state, reached by the relation
# word only through attention that has not grown yet. "above" and "below" then collapse
# together and the reversed-caption negatives give neither tower a gradient. Here the ViT has
# fixed 2D sin-cos positions (as strong as the content from the first step), the text tower is
# mean-pooled up to EOS (every word reaches the embedding directly) and half of the hard
# negatives reverse the relation where the scene allows it. docs/clip.md has the ablations.
MEANPOOL = {**RERANKER, "vision": {**RERANKER["vision"], "pos": "sincos"}, "text": {**RERANKER["text"], "pool": "mean"}}
MEANPOOL_DATA = {"holdout": "default", "negatives": {"relation": 2.0, "swap": 1.0, "replace": 1.0}}
MEANPOOL_TRAIN = {**RERANKER_TRAIN, "steps": 3000, "val_split": "heldout_val"}
register_recipe(Recipe(
    name="clip_shapes_meanpool", model="clip_tiny", data="shapes",
    model_overrides=MEANPOOL, data_kwargs=MEANPOOL_DATA, train=MEANPOOL_TRAIN,
    description="shapes CLIP reranker: clip_shapes_reranker's towers with fixed 2D sin-cos positions in the ViT, a "
                "mean-pooled text tower and half of the hard negatives relation-reversed",
    expected="700 steps (3.6 min, 1 thread): heldout_val t2i R@1 0.419 (clip_shapes_reranker at 2,000 steps: "
             "0.414 on heldout_test); relation still at chance (56 %); docs/clip.md"))

# CoCa on top of clip_shapes_meanpool: a 2-block captioning decoder cross-attending to the
# ViT's tokens must predict "above" after "a red circle", which it can only do if the image
# tower encodes which object is on top: the signal the contrastive loss alone never starts.
register_recipe(Recipe(
    name="clip_shapes_coca", model="clip_tiny", data="shapes",
    model_overrides={**MEANPOOL, "caption_loss": 2.0, "caption_depth": 2},
    data_kwargs=MEANPOOL_DATA, train=MEANPOOL_TRAIN,
    description="shapes CLIP reranker with a captioning loss (CoCa): clip_shapes_meanpool plus a 2-block decoder "
                "predicting each caption token from the image tokens",
    expected="heldout_test text->image R@1 0.746 (R@10 0.996); prefers its caption over the relation-reversed one "
             "for 99 % of two-object scenes (chance at 700 steps); 13.7 min on one thread (checkpoints/clip_shapes_coca)"))

# clip_shapes_coca's towers and captioning loss, each caption also against a hard-negative image
COCA_NEGIMG = {**MEANPOOL, "caption_loss": 2.0, "caption_depth": 2, "hard_negative_images": True}

# clip_shapes_coca (the shipped weights) fine-tuned with hard-negative images: each caption
# also scores its scene with one object stretched, bumped or merged with another shape. As
# the DALL-E's reranker, clip_shapes_coca picked an all-correct sample for 80 of 100
# two-object validation prompts although one of the 8 candidates always was; 18 of its 20
# misses were objects of no clear shape (stretched squares, blobs, merged shapes).
register_recipe(Recipe(
    name="clip_shapes_coca_negimg", model="clip_tiny", data="shapes",
    model_overrides=COCA_NEGIMG,
    data_kwargs={**MEANPOOL_DATA, "negative_images": True},
    train={**MEANPOOL_TRAIN, "init_from": "clip_shapes_coca", "steps": 3000, "lr": 3e-4, "keep_every": 1000},
    description="clip_shapes_coca fine-tuned with a hard-negative image per caption (the scene with one object "
                "distorted) beside its hard-negative captions",
    expected="heldout_test t2i R@1 0.749, i2t 0.772; as the DALL-E's reranker it picks an all-correct sample for "
             "77 % of two-object validation prompts (clip_shapes_coca: 80 %); 31 min on 2 CPU cores (docs/clip.md)"))

# the fine-tuning schedule against a bank of generator samples (scripts/sample_bank.py)
BANK_TRAIN = {**MEANPOOL_TRAIN, "init_from": "clip_shapes_coca", "steps": 1200, "lr": 1e-4, "warmup": 50,
              "eval_every": 400, "keep_every": 400}

# clip_shapes_coca fine-tuned on the generator's own samples (scripts/sample_bank.py): each
# caption must score the VQ reconstruction of its scene above the DALL-E's sample for it.
# The distorted renders above are not what the generator gets wrong; its samples are, and
# both sides pass through the same decoder, so decoder texture tells them nothing apart.
register_recipe(Recipe(
    name="clip_shapes_coca_bank", model="clip_tiny", data="shapes",
    model_overrides=COCA_NEGIMG,
    data_kwargs={**MEANPOOL_DATA, "sample_bank": "runs/shapes_sample_bank.safetensors"},
    train=BANK_TRAIN,
    description="clip_shapes_coca fine-tuned to rank each train scene's VQ reconstruction above a DALL-E sample "
                "for its caption (a bank of 6,144 samples of dalle_shapes, scripts/sample_bank.py)",
    expected="alone it picks an all-correct sample of 8 for 77 % of 400 two-object validation prompts "
             "(clip_shapes_coca: 79.5 %); in the shipped four-CLIP ensemble 84.25 %; 10.4 min on 2 CPU cores "
             "(docs/dalle.md)"))

# The same against the shipped two-stage DALL-E (scripts/sample_bank.py --replace-correct). That
# model is right about half the time on a single sample, so a sample the strict checker passes
# is no negative: those become distorted renders of the scene and every negative is wrong.
# Not shipped: it gains the ensemble half a point to a point, inside the noise.
register_recipe(Recipe(
    name="clip_shapes_coca_twostage", model="clip_tiny", data="shapes",
    model_overrides=COCA_NEGIMG,
    data_kwargs={**MEANPOOL_DATA, "sample_bank": "runs/shapes_sample_bank_two_stage.safetensors"},
    train=BANK_TRAIN,
    description="clip_shapes_coca fine-tuned to rank each train scene above the two-stage DALL-E's wrong sample for "
                "its caption (a bank of 6,144 train items; correct samples replaced by distorted renders)",
    expected="alone it picks an all-correct sample of 8 for 81.5 % of 200 two-object validation prompts and 76 % "
             "of held-out-pair ones (clip_shapes_coca_bank: 81 / 68 %); added to the shipped four-CLIP ensemble "
             "83.5 / 76 % (without it 82.5 / 75.5 %); 8.9 min on 2 CPU cores (docs/dalle.md)"))

# The base `python -m train finetune clip` starts from: the same small towers with the byte
# tokenizer, so the captions of any dataset (animal-mnist's templates) tokenize.
register_recipe(Recipe(
    name="clip_shapes_byte_base", model="clip_tiny", data="shapes",
    model_overrides={**SMALL, "tokenizer": "byte", "text": {**SMALL["text"], "context_length": 48}},
    data_kwargs={"holdout": "default"},
    train=dict(steps=300, batch_size=64, lr=2e-3, warmup=30, weight_decay=0.1, val_split="heldout_test",
               eval_batches=4, log_every=50, save_every=300),
    description="small CLIP on shapes with the byte tokenizer: the base of `python -m train finetune clip`",
    expected="held-out text->image R@1 0.54 (in-batch), 2 min on a shared 2-core CPU; the fine-tuning table "
             "is in docs/llm.md"))
