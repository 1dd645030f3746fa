"""The `mifo_box` sampler: MIFO's precise synthesis (box control) for any method's tokens.

DDIM + CFG as `bas.generation.sampler`, with two additions (PROTOCOL.md sec. 3):
- box masks in attention: at every attention block (or `mask_layers`), each subject token
  is hidden outside its box in cross-attention, and a pixel of one subject's box may not
  attend another subject's box in self-attention (`box_control.*_block`);
- latent optimisation: in the first `guidance_steps` denoising steps, before the step, up to
  `iterations` gradient steps on the latent (step size 8 -> 2) of
  cross_weight * L_cross + self_weight * L_self, each a sum over subjects of
  `box_control.box_loss` with the alpha schedule, read on `loss_layers`; a sample stops once
  its loss / subjects falls below `loss_threshold` (checked before each gradient step, on the
  loss of the previous one, as MIFO's code).

Subjects are the item's concepts, their tokens found in the prompt by name (`<assetN>`), so
the sampler needs no knowledge of the method. Boxes come from the scene's masks (bounding
box of each mask) unless the scene carries `boxes` (one per concept, fractions of the side).
Optimisation passes run only the conditional half (the loss reads only it; the UNet treats
samples independently), and every sample stops on its own loss, so an image does not depend
on its batch. Attention layers the loss does not read run SDPA with the box mask as bias.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from bas import attention as attn
from bas.attention import finish_attention, prepare_attention, token_positions
from bas.config import MifoBoxConfig
from bas.generation import box_control as bc
from bas.generation.sampler import _autocast, decode_latents, denoise, encode_prompts, initial_latents
from bas.tokens import placeholder

PROCESSOR_SUFFIX = ".processor"


def subject_positions(tokenizer, ids: torch.Tensor, subset: Sequence[int]) -> list[int]:
    """Prompt positions of the concept tokens `<assetN>` of `subset`, in subset order."""
    names = [placeholder(i) for i in subset]
    token_ids = tokenizer.convert_tokens_to_ids(names)
    if any(t is None or t == tokenizer.unk_token_id for t in token_ids):
        raise ValueError(f"the tokenizer does not know the concept tokens {names} (load a trained run first)")
    return token_positions(ids, token_ids)


def eos_position(tokenizer, ids: torch.Tensor) -> Optional[int]:
    where = (ids == tokenizer.eos_token_id).nonzero().flatten().tolist()
    return where[0] if where else None


def scene_boxes(scene, subset: Sequence[int]) -> list[bc.Box]:
    """Boxes of the subset's concepts: the scene's own `boxes`, else its masks' bounding boxes."""
    boxes = getattr(scene, "boxes", None)
    if boxes is not None:
        return [tuple(float(v) for v in boxes[i]) for i in subset]
    return [bc.mask_box(scene.masks[i]) for i in subset]


class BoxController:
    """State shared by the box processors of one batch: boxes, token positions, masks by
    resolution, whether the latent is being optimised, and the loss values of a pass."""

    def __init__(self, boxes: Sequence[Sequence[bc.Box]], positions: Sequence[Sequence[int]],
                 eos: Sequence[Optional[int]], num_tokens: int, device: torch.device) -> None:
        self.boxes, self.positions, self.eos = boxes, positions, eos
        self.num_tokens, self.device = num_tokens, device
        self.optimizing = False
        self._grids: dict[int, list[torch.Tensor]] = {}
        self._bias: dict[tuple, torch.Tensor] = {}
        self.reset_values()

    @property
    def samples(self) -> int:
        return len(self.boxes)

    def reset_values(self) -> None:
        # kind -> one entry per loss layer -> one (fg, bg) per sample, each (S_b,): samples of a
        # batch may have different numbers of subjects.
        self.values: dict[str, list[list[tuple[torch.Tensor, torch.Tensor]]]] = {"cross": [], "self": []}

    def grids(self, hw: int) -> list[torch.Tensor]:
        """Each sample's (S, hw) box grid at this resolution."""
        if hw not in self._grids:
            side = int(round(hw ** 0.5))
            self._grids[hw] = [bc.box_grid(b, side, self.device) for b in self.boxes]
        return self._grids[hw]

    def bias(self, cross: bool, rows: int, hw: int, keys: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive attention bias (rows, 1, hw, keys): 0 where allowed, dtype's min where blocked.

        rows = 2B (CFG: unconditional half first) or B (optimisation passes: conditional only);
        cross-attention masks only the conditional rows, self-attention every row.
        """
        cfg = rows == 2 * self.samples
        include_background = self.optimizing
        key = (cross, cfg, hw, include_background, dtype)
        if key not in self._bias:
            blocks = []
            for b, grid in enumerate(self.grids(hw)):
                if cross:
                    blocks.append(bc.cross_attention_block(grid, self.positions[b], keys, self.eos[b],
                                                           include_background))
                else:
                    blocks.append(bc.self_attention_block(grid))
            block = torch.stack(blocks)                                         # (B, hw, keys)
            if cfg:
                uncond = torch.zeros_like(block) if cross else block
                block = torch.cat([uncond, block])                              # (2B, hw, keys)
            bias = torch.zeros(block.shape, dtype=dtype, device=self.device)
            self._bias[key] = bias.masked_fill(block, torch.finfo(dtype).min)[:, None]
        return self._bias[key]

    def record(self, cross: bool, probs: torch.Tensor) -> None:
        """Foreground / background mass of an optimisation pass's loss layer; probs (B, heads, n, keys)."""
        grids = self.grids(probs.shape[2])
        per_sample = [bc.cross_mass(probs[b], grids[b], self.positions[b]) if cross else bc.self_mass(probs[b], grids[b])
                      for b in range(probs.shape[0])]
        self.values["cross" if cross else "self"].append(per_sample)

    def losses(self, settings: MifoBoxConfig, alpha: float) -> torch.Tensor:
        """Each sample's loss of the last pass, (B,): layers averaged, subjects summed."""
        totals = []
        for b in range(self.samples):
            total = 0.0
            for kind, weight in (("cross", settings.cross_weight), ("self", settings.self_weight)):
                layers = self.values[kind]
                if not layers:
                    raise RuntimeError(f"no {kind}-attention recorded on the box-control loss layers")
                fg = torch.stack([layer[b][0] for layer in layers]).mean(dim=0)   # (S_b,), layers averaged
                bg = torch.stack([layer[b][1] for layer in layers]).mean(dim=0)
                total = total + weight * bc.box_loss(fg, bg, alpha).sum()
            totals.append(total)
        return torch.stack(totals)                                               # (B,)


class BoxAttnProcessor:
    """Attention with the controller's box bias; on loss layers during optimisation it uses
    an explicit fp32 softmax and hands the probabilities to the controller."""

    def __init__(self, controller: BoxController, cross: bool, masked: bool, in_loss: bool) -> None:
        self.controller, self.cross, self.masked, self.in_loss = controller, cross, masked, in_loss

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 *args, **kwargs) -> torch.Tensor:
        x = prepare_attention(attn, hidden_states, encoder_hidden_states, temb)
        query, key, value, batch, heads = x.query, x.key, x.value, x.batch, attn.heads
        query_len = query.shape[2]

        explicit = self.in_loss and self.controller.optimizing
        bias_dtype = torch.float32 if explicit else query.dtype
        bias = None
        if self.masked:
            bias = self.controller.bias(self.cross, batch, query_len, key.shape[2], bias_dtype)  # (B, 1, HW, K)
        if attention_mask is not None:
            extra = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            extra = extra.view(batch, heads, -1, extra.shape[-1]).to(bias_dtype)
            bias = extra if bias is None else bias + extra

        if explicit:
            with torch.autocast(query.device.type, enabled=False):
                scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale
                if bias is not None:
                    scores = scores + bias
                probs = scores.softmax(dim=-1)                                  # (B, heads, HW, K)
            self.controller.record(self.cross, probs)
            hidden_states = torch.matmul(probs.to(value.dtype), value)
        else:
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=attn.scale)
        return finish_attention(attn, x, hidden_states)


def _under(name: str, blocks: Sequence[str]) -> bool:
    return any(name.startswith(block.rstrip(".") + ".") for block in blocks)


def install_box_control(unet, controller: BoxController, settings: MifoBoxConfig) -> dict:
    """Put box processors on the mask and loss blocks; returns the processors to restore."""
    original = dict(unet.attn_processors)
    for layers, what in ((settings.loss_layers, "loss_layers"), (settings.mask_layers, "mask_layers")):
        for layer in layers:
            if not any(_under(n, [layer]) for n in original):
                raise ValueError(f"params: generation.mifo_box.{what}: {layer!r} has no attention in this UNet")
    processors = dict(original)
    for name in original:
        module = name[: -len(PROCESSOR_SUFFIX)]
        masked = not settings.mask_layers or _under(module, settings.mask_layers)
        in_loss = _under(module, settings.loss_layers)
        if masked or in_loss:
            processors[name] = BoxAttnProcessor(controller, module.endswith("attn2"), masked, in_loss)
    unet.set_attn_processor(processors)
    return original


def optimise_latents(parts, controller: BoxController, settings: MifoBoxConfig, cond: torch.Tensor,
                     latents: torch.Tensor, step: int, t) -> torch.Tensor:
    """MIFO's latent update before denoising step `step` (a no-op from guidance_steps on)."""
    if step >= settings.guidance_steps:
        return latents
    alpha = bc.alpha_at(step, settings.alpha_start, settings.alpha_mid, settings.alpha_end,
                        settings.alpha_linear_end, settings.alpha_cosine_end)
    step_size = bc.step_size_at(step, settings.step_size_start, settings.step_size_end, settings.guidance_steps)
    subjects = torch.tensor([len(p) for p in controller.positions], device=latents.device, dtype=torch.float32)
    done = torch.zeros(latents.shape[0], dtype=torch.bool, device=latents.device)   # (B,)
    controller.optimizing = True
    try:
        with torch.enable_grad():
            for _ in range(settings.iterations):
                if bool(done.all()):
                    break
                x = latents.detach().float().requires_grad_(True)
                controller.reset_values()
                parts.unet(x.to(latents.dtype), t, encoder_hidden_states=cond)
                losses = controller.losses(settings, alpha)                     # (B,)
                grad, = torch.autograd.grad(losses.sum(), [x])
                update = step_size * grad * (~done).float()[:, None, None, None]
                latents = (x - update).detach().to(latents.dtype)
                # MIFO's code steps first and checks the loss before the next step.
                done |= losses.detach() / subjects < settings.loss_threshold
    finally:
        controller.optimizing = False
        controller.reset_values()
    return latents


@torch.no_grad()
def generate_box_controlled(parts, prompts: Sequence[str], seeds: Sequence[int], subsets: Sequence[Sequence[int]],
                            boxes: Sequence[Sequence[bc.Box]], settings: MifoBoxConfig, *, steps: int,
                            guidance_scale: float, negative_prompt: str = "",
                            dtype: Optional[torch.dtype] = None, step_hook=None) -> list[Image.Image]:
    """Box-controlled images for one batch: prompt i shows the concepts `subsets[i]` in `boxes[i]`.

    `step_hook(i, t, latents)`, if given, sees the latents after each step's optimisation
    (used to measure attention; it must not change them).
    """
    device = parts.unet.device
    ids = parts.tokenizer(list(prompts), padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids                       # (B, 77)
    positions = [subject_positions(parts.tokenizer, ids[b], subset) for b, subset in enumerate(subsets)]
    for b, (pos, box) in enumerate(zip(positions, boxes, strict=True)):
        if len(pos) != len(box):
            raise ValueError(f"prompt {prompts[b]!r}: {len(pos)} subjects but {len(box)} boxes")
    eos = [eos_position(parts.tokenizer, ids[b]) for b in range(len(prompts))]
    controller = BoxController(boxes, positions, eos, ids.shape[1], device)
    original = install_box_control(parts.unet, controller, settings)
    try:
        with _autocast(device, dtype):
            cond = parts.text_encoder(ids.to(device))[0]                                        # (B, 77, D)
            uncond = encode_prompts(parts, [negative_prompt] * len(prompts), device)
            latents = initial_latents(parts, seeds).to(device, cond.dtype)

            def callback(i, t, x):
                x = optimise_latents(parts, controller, settings, cond, x, i, t)
                if step_hook is not None:
                    step_hook(i, t, x)
                return x

            latents = denoise(parts, cond, uncond, latents, steps, guidance_scale, step_callback=callback)
            return decode_latents(parts, latents.to(parts.vae.dtype))
    finally:
        parts.unet.set_attn_processor(original)


def sample_mifo_box(parts, items, scene, gen, *, dtype: Optional[torch.dtype] = None,
                    batch_invariant: bool = True) -> list[Image.Image]:
    """The `mifo_box` entry of the sampler registry: one box-controlled image per grid item."""
    size = 1 if batch_invariant else max(1, len(items))
    images: list[Image.Image] = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        images += generate_box_controlled(
            parts, [it.prompt for it in chunk], [it.seed for it in chunk], [it.subset for it in chunk],
            [scene_boxes(scene, it.subset) for it in chunk], gen.mifo_box, steps=gen.steps,
            guidance_scale=gen.guidance_scale, negative_prompt=gen.negative_prompt, dtype=dtype)
    return images


@torch.no_grad()
def box_attention_fraction(parts, latents: torch.Tensor, t, prompts: Sequence[str], subsets: Sequence[Sequence[int]],
                           boxes: Sequence[Sequence[bc.Box]], layers: Sequence[str]) -> torch.Tensor:
    """Unmasked cross-attention share of each subject token inside its box, (B, S).

    One plain UNet pass (no box masks) on `latents` at timestep `t`; each subject token's
    map is averaged over heads and `layers` (all of one resolution), then its mass in its
    box is divided by its total mass.
    """
    device = parts.unet.device
    ids = parts.tokenizer(list(prompts), padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    store = attn.AttentionStore()
    original = dict(parts.unet.attn_processors)
    attn.install(parts.unet, layers, store)
    try:
        cond = parts.text_encoder(ids.to(device))[0]
        parts.unet(latents, t, encoder_hidden_states=cond)
        maps = store.mean_map(layers)                                                     # (B, HW, T)
    finally:
        parts.unet.set_attn_processor(original)
    side = int(round(maps.shape[1] ** 0.5))
    out = []
    for b, subset in enumerate(subsets):
        positions = subject_positions(parts.tokenizer, ids[b], subset)
        grid = bc.box_grid(boxes[b], side, maps.device)
        out.append(bc.in_box_fraction(maps[b][:, positions].transpose(0, 1), grid))
    return torch.stack(out)
