"""bench/memory.py: a phase's peak is the counted state plus the measured activations, for every option set.

The measuring itself needs the full-size models (minutes each); these tests check how the
measurements are combined into the table that `training.memory: auto` and docs/BENCHMARKS.md use.
"""

from bas.models.memory import GB, HEADROOM, ParameterCounts, phase_state, trainable_count
from bench.memory import TABLE_OPTIONS, fits_table, phase_totals

COUNTS = ParameterCounts(unet=10**9, vae=10**8, text_encoder=3 * 10**8, token_embedding=5 * 10**7,
                         cross_attention_kv=4 * 10**7, cross_attention_k=2 * 10**7)
FULL = ["tokens", "unet", "text_encoder"]


def test_every_option_set_adds_the_measured_activations_of_its_checkpointing_to_the_counted_state():
    grads = 4 * trainable_count(COUNTS, FULL)
    measured = {"trainable": FULL, "samples": 2, "gradient_bytes": grads,
                "step_bytes": {"false": grads + 9 * 10**9, "true": grads + 5 * 10**9}}
    totals = phase_totals(measured, COUNTS)
    assert set(totals) == {"fp32", "gradient_checkpointing", "use_8bit_adam", "gradient_checkpointing+use_8bit_adam"}
    assert totals["fp32"]["cpu"] == phase_state(COUNTS, FULL) + 9 * 10**9
    assert totals["gradient_checkpointing"]["cpu"] == totals["fp32"]["cpu"] - 4 * 10**9
    # 8-bit moments: 2 bytes a trained parameter instead of 8.
    assert totals["fp32"]["cpu"] - totals["use_8bit_adam"]["cpu"] == 6 * trainable_count(COUNTS, FULL)
    # autocast's 2-byte copies of the trained weights (not of the looked-up token rows)
    assert totals["fp32"]["cuda"] - totals["fp32"]["cpu"] == 2 * (10**9 + 3 * 10**8 - 5 * 10**7)
    assert len(TABLE_OPTIONS) == 4


def test_the_table_marks_the_gpu_sizes_a_cuda_peak_fits_with_head_room():
    limit_16 = 16 * GB * (1 - HEADROOM)
    lines = fits_table({"x.phase2": {"fp32": {"cpu": 1, "cuda": int(limit_16) + 1},
                                     "use_8bit_adam": {"cpu": 1, "cuda": int(limit_16)}}})
    assert lines[0].startswith("| case | options | CPU, fp32 (GB) | CUDA, bf16 autocast (GB) | 12 GB | 16 GB | 24 GB")
    fp32 = next(line for line in lines if "| fp32 |" in line)
    eight_bit = next(line for line in lines if "| use_8bit_adam |" in line)
    assert fp32.split("|")[5:10] == [" no ", " no ", " yes ", " yes ", " yes "]
    assert eight_bit.split("|")[5:10] == [" no ", " yes ", " yes ", " yes ", " yes "]
