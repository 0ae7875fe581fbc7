"""Language-task recipes on small byte-level GPTs: in-context learning of a random function
per sequence, and arithmetic with / without a chain-of-thought scratchpad. Evaluate with
`mmgen lm-tasks icl|cot ...` (docs/llm.md)."""
from . import Recipe, register_recipe

# Two layers is the least an induction head needs (a previous-token head, then a head that
# looks up the token after an earlier copy of the query).
ICL_MODEL = dict(vocab_size=259, context_length=32, embed_dim=64, depth=2, num_heads=4, pos="rope")
register_recipe(Recipe(
    name="icl_gpt",
    model="gpt_tiny",
    data="icl",
    model_overrides=ICL_MODEL,
    data_kwargs=dict(num_pairs=16, num_x=8, num_y=16),
    # lr 1e-3 without weight decay: at 5e-3 / 0.1 the model stayed on the frequency-guess
    # plateau for 15,000 steps; here the induction circuit forms between steps 2,000 and 2,750
    train=dict(steps=4000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=100, weight_decay=0.0, clip=1.0,
               eval_every=250, eval_batches=4, log_every=100, save_every=2000),
    description="2-layer 64-wide RoPE GPT on sequences of 16 (x, f(x)) letter pairs, f drawn fresh per sequence "
                "(8 x letters -> 16 y letters): it can only score by reading f from the context.",
    expected="mean query accuracy 0.584 = the best possible 0.584 (no context: 0.052); right on every query "
             "whose x appeared before; induction heads in layer 1 (scores 0.94-0.97) over a previous-token head "
             "in layer 0 (0.98); 4,000 steps, 8.4 min on one thread of a shared 2-core CPU; docs/llm.md",
))

# Chain of thought: the same GPT and the same rows of 128 tokens per step for both formats,
# so equal steps are equal compute; the plain rows simply hold more (shorter) examples.
COT_MODEL = dict(vocab_size=259, context_length=128, embed_dim=96, depth=4, num_heads=4)
COT_TRAIN = dict(steps=1000, batch_size=32, lr=2e-3, min_lr=2e-4, warmup=50, weight_decay=0.1, clip=1.0,
                 eval_every=100, eval_batches=4, log_every=50, save_every=500)
for _name, _pad in (("cot_plain", False), ("cot_scratchpad", True)):
    register_recipe(Recipe(
        name=_name,
        model="gpt_tiny",
        data="arithmetic",
        model_overrides=COT_MODEL,
        data_kwargs=dict(scratchpad=_pad, ops="add,mul", min_digits=1, max_digits=4, block_size=128),
        train=COT_TRAIN,
        description=("4-layer 96-wide byte GPT on 1-4 digit addition and multiplication by a digit, "
                     + ("answers after a digit-by-digit scratchpad" if _pad else "plain answers")
                     + "; rows of 128 packed tokens, loss on the completions"),
        expected=("greedy exact match on 1/2/3/4-digit a+b: " + ("0.89/0.62/0.51/0.27" if _pad else "0.12/0.02/0.00/0.00")
                  + ", a*digit: " + ("0.72/0.42/0.22/0.15" if _pad else "0.22/0.10/0.13/0.11")
                  + "; ~11-12 min on one thread of a shared 2-core CPU; docs/llm.md"),
    ))
