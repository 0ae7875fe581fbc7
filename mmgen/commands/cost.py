"""`mmgen cost PRESET ...`: parameters, FLOPs, memory, decode traffic, communication, MFU."""
from __future__ import annotations

from ._args import positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("cost", help="cost model of a preset: params, FLOPs, memory, communication, MFU")
    p.add_argument("presets", nargs="+", help="registered presets (shell patterns allowed, e.g. 'gpt*')")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--seq", type=positive_int, default=None, help="sequence length (default: the model's context)")
    p.add_argument("--dtype", default="bf16", help="fp32 | bf16 | fp16 | int8 | int4 (weights, activations)")
    p.add_argument("--devices", type=positive_int, default=1, help="N devices for the DDP / FSDP / TP communication")
    p.add_argument("--peak", type=positive_float, default=None, help="peak FLOP/s of one device, for MFU")
    p.add_argument("--tokens-per-s", type=positive_float, default=None, help="measured training tokens/s, for MFU")
    p.add_argument("--trainable", type=positive_float, default=None, help="trainable parameters (fine-tuning)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--table", action="store_true", help="print one markdown table row per preset")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import mmgen
    from mmgen.cost import estimate, format_report, markdown_table
    names = []
    for pat in args.presets:
        hits = mmgen.list_models(pat)
        if not hits:
            mmgen.registry.get_preset(pat)  # raises with close matches
        names += hits
    reports = [estimate(n, batch=args.batch, seq_len=args.seq, dtype=args.dtype, devices=args.devices,
                        peak_flops=args.peak, tokens_per_s=args.tokens_per_s, trainable=args.trainable)
               for n in names]
    if args.table:
        print(markdown_table(reports))
    elif args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    else:
        print("\n".join(format_report(r) for r in reports))
    return 0
