"""The methods params.yaml ships, as the tests expect them (the library reads kinds from recipes)."""

# BaS, its four ablations and the masked baselines it compares against (PROTOCOL.md sec. 2).
SHIPPED = (
    "bas", "bas_no_phase1", "bas_no_masked_loss", "bas_no_attn_loss", "bas_no_union_sampling",
    "ti_m", "db_m", "cd_m",
)
# BaS's successors (PROTOCOL.md sec. 3, docs/SUCCESSORS.md), each a recipe on the same engine.
SUCCESSORS = ("mifo", "tl_hard", "tl_soft", "sne")
# Recipes that measure the sandbox's base model rather than compete (kind `reference`).
MEASURING = ("full_finetune",)
