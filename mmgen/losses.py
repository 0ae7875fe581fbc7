"""Contrastive losses for image-text models, as open_clip writes them: ClipLoss (symmetric
InfoNCE, optionally over the global batch of every rank) and SigLipLoss (pairwise sigmoid),
with the distributed gathers they need. Used by mmgen.models.clip; usable on any pair of
(batch, dim) feature sets.

    loss = ClipLoss()(image_features, text_features, logit_scale)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClipLoss", "SigLipLoss", "all_gather_with_grad", "dist_info", "gather_features", "gather_labels", "gather_one"]


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else torch.distributed's when initialised, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate a (B, ...) tensor from every rank along dim 0 (equal B everywhere). The
    backward sums every rank's gradient of the gathered tensor and hands each rank its own
    slice (what torch.distributed.nn.all_gather does; that one is deprecated)."""

    @staticmethod
    def forward(ctx, x):
        import torch.distributed as dist
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over ranks of d(loss_r)/d(gathered)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    return _AllGatherWithGrad.apply(x)


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor, *, local_loss: bool,
                    gather_with_grad: bool, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather both feature sets across ranks, as open_clip does. With gather_with_grad the
    gather is differentiable (its backward sums the gradients of every rank into the local
    slice); otherwise the gathered copies carry no gradient and, unless local_loss, the local
    slice is swapped back in so that this rank's own features still get one."""
    kw = dict(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)
    return gather_one(image_features, **kw), gather_one(text_features, **kw)


def gather_one(x: torch.Tensor, *, local_loss: bool, gather_with_grad: bool, rank: int,
               world_size: int) -> torch.Tensor:
    """One feature set of gather_features: (B, D) on every rank -> (W*B, D)."""
    import torch.distributed as dist
    if gather_with_grad:
        return all_gather_with_grad(x)
    parts = [torch.zeros_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach())
    if not local_loss:
        parts[rank] = x
    return torch.cat(parts, dim=0)


def gather_labels(labels: torch.Tensor, world_size: int) -> torch.Tensor:
    import torch.distributed as dist
    out = [torch.zeros_like(labels) for _ in range(world_size)]
    dist.all_gather(out, labels)
    return torch.cat(out, dim=0)


def _check_features(image_features, text_features, labels):
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(f"contrastive loss wants image and text features of the same shape (batch, dim), "
                         f"got {tuple(image_features.shape)} and {tuple(text_features.shape)}")
    if labels is not None and labels.shape != image_features.shape[:1]:
        raise ValueError(f"labels must be ({image_features.shape[0]},), got {tuple(labels.shape)}")


def _same_label_mask(row_labels: torch.Tensor, col_labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(R, C) True where column j has the row's label but is not its own pair: a caption of
    the same class, which label-aware losses do not count as a negative."""
    same = row_labels[:, None] == col_labels[None, :]
    same[torch.arange(len(targets), device=targets.device), targets] = False
    return same


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the (global) batch: cross-entropy of image->text and
    text->image logits against the diagonal, averaged (open_clip's ClipLoss).

    Under torch.distributed (rank/world_size taken from the process group at call time):
    local_loss=True computes only this rank's rows against all columns (memory O(B_local x
    B_global)); gather_with_grad=True back-propagates through the all-gather. With both on,
    DDP's gradient average equals the single-process gradient on the global batch.
    label_aware=True takes `labels` (B,) and drops captions of the same class from each
    row's negatives (for class-template captions, where "a photo of a cat" pairs with
    every cat image)."""

    def __init__(self, *, local_loss: bool = False, gather_with_grad: bool = False, label_aware: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.local_loss, self.gather_with_grad, self.label_aware = local_loss, gather_with_grad, label_aware
        self.rank, self.world_size = rank, world_size

    def get_logits(self, image_features, text_features, logit_scale, logit_bias=None, labels=None,
                   distributed: bool = True, negative_text_features=None, negative_image_features=None):
        """(logits_per_image, logits_per_text, targets), label-aware masking applied. With
        `negative_text_features` (B, D), one hard-negative caption per image, every image row
        also scores every negative (extra columns after the batch's captions: NegCLIP); the
        text->image direction is unchanged. `negative_image_features` (B, D), one hard-negative
        image per caption, do the same for every caption row (text->image)."""
        rank, world = dist_info(self.rank, self.world_size) if distributed else (0, 1)
        B = image_features.shape[0]
        all_labels, all_img, all_txt = labels, None, None
        if world > 1:
            all_img, all_txt = gather_features(image_features, text_features, local_loss=self.local_loss,
                                               gather_with_grad=self.gather_with_grad, rank=rank,
                                               world_size=world)
            if labels is not None:
                all_labels = gather_labels(labels, world)
            if self.local_loss:
                logits_per_image = logit_scale * image_features @ all_txt.T  # (B, W*B)
                logits_per_text = logit_scale * text_features @ all_img.T  # (B, W*B)
                targets = torch.arange(B, device=image_features.device) + B * rank
                row_labels = labels
            else:
                logits_per_image = logit_scale * all_img @ all_txt.T  # (W*B, W*B)
                logits_per_text = logits_per_image.T
                targets = torch.arange(all_img.shape[0], device=image_features.device)
                row_labels = all_labels
        else:
            logits_per_image = logit_scale * image_features @ text_features.T  # (B, B)
            logits_per_text = logit_scale * text_features @ image_features.T
            targets = torch.arange(B, device=image_features.device)
            row_labels = labels
        if logit_bias is not None:
            logits_per_image = logits_per_image + logit_bias
            logits_per_text = logits_per_text + logit_bias
        if self.label_aware:
            if labels is None:
                raise ValueError("label_aware ClipLoss needs labels (batch,)")
            drop = _same_label_mask(row_labels, all_labels, targets)
            logits_per_image = logits_per_image.masked_fill(drop, float("-inf"))
            logits_per_text = logits_per_text.masked_fill(drop, float("-inf"))

        def negative_columns(rows, all_rows, negatives):  # (rows, W*B): each row against every hard negative
            if world > 1:
                negatives = gather_one(negatives, local_loss=self.local_loss, gather_with_grad=self.gather_with_grad,
                                       rank=rank, world_size=world)
                rows = rows if self.local_loss else all_rows
            extra = logit_scale * rows @ negatives.T
            return extra if logit_bias is None else extra + logit_bias

        if negative_text_features is not None:  # image rows: extra caption columns
            logits_per_image = torch.cat([logits_per_image, negative_columns(image_features, all_img,
                                                                             negative_text_features)], dim=1)
        if negative_image_features is not None:  # caption rows: extra image columns
            logits_per_text = torch.cat([logits_per_text, negative_columns(text_features, all_txt,
                                                                           negative_image_features)], dim=1)
        return logits_per_image, logits_per_text, targets

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, labels=None, *,
                distributed: bool = True, negative_text_features=None, negative_image_features=None) -> torch.Tensor:
        """distributed=False: this process's batch alone, even inside a process group (for
        evaluation on one rank, where a collective would wait forever for the others)."""
        _check_features(image_features, text_features, labels)
        if negative_text_features is not None:
            _check_features(image_features, negative_text_features, None)
        if negative_image_features is not None:
            _check_features(negative_image_features, text_features, None)
        li, lt, targets = self.get_logits(image_features, text_features, logit_scale, logit_bias, labels, distributed,
                                          negative_text_features, negative_image_features)
        return (F.cross_entropy(li, targets) + F.cross_entropy(lt, targets)) / 2


class SigLipLoss(nn.Module):
    """Sigmoid loss (Zhai et al., 2023): every image-text pair is a binary problem, +1 on the
    diagonal and -1 elsewhere, summed and divided by the local batch (open_clip's SigLipLoss).

    Under torch.distributed the text features of every rank are gathered with gradient
    (open_clip's "gather" exchange) and this rank's images see them as negatives. Each rank
    divides its rows by the local batch, so the mean of the rank losses (and DDP's averaged
    gradient) equals the single-process loss on the global batch.
    label_aware=True leaves out same-class pairs (neither positive nor negative)."""

    def __init__(self, *, label_aware: bool = False, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.label_aware, self.rank, self.world_size = label_aware, rank, world_size

    def _block(self, image_features, text_features, logit_scale, logit_bias, positive: bool, drop=None):
        logits = logit_scale * image_features @ text_features.T  # (B, B')
        if logit_bias is not None:
            logits = logits + logit_bias
        sign = -torch.ones_like(logits)
        if positive:
            sign = sign + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)
        terms = F.logsigmoid(sign * logits)
        if drop is not None:
            terms = terms.masked_fill(drop, 0.0)
        return -terms.sum() / image_features.shape[0]

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, labels=None, *,
                distributed: bool = True) -> torch.Tensor:
        _check_features(image_features, text_features, labels)
        if self.label_aware and labels is None:
            raise ValueError("label_aware SigLipLoss needs labels (batch,)")
        rank, world = dist_info(self.rank, self.world_size) if distributed else (0, 1)
        B = image_features.shape[0]
        diag = torch.arange(B, device=image_features.device)
        drop = _same_label_mask(labels, labels, diag) if self.label_aware else None
        loss = self._block(image_features, text_features, logit_scale, logit_bias, True, drop)
        if world > 1:
            all_txt = all_gather_with_grad(text_features).chunk(world)  # W x (B, D)
            all_lab = gather_labels(labels, world) if self.label_aware else None
            for r in range(world):
                if r == rank:
                    continue
                d = (labels[:, None] == all_lab[r * B:(r + 1) * B][None, :]) if self.label_aware else None
                loss = loss + self._block(image_features, all_txt[r], logit_scale, logit_bias, False, d)
        return loss
