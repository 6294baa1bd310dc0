"""The numbers a study reports per architecture, keyed as in its results and table."""

#: claim key -> (row label, key in the report's claims numbers or a study measure)
CLAIMS: dict[str, str] = {
    "phase_order_share": "layers with collapse -> expansion -> stabilisation (share)",
    "a_sig": "significant activation transitions",
    "w_sig": "significant weight transitions",
    "raw_over_null": "raw activation candidates / surrogate count",
    "early_sig": "share of significant activation transitions in the first 25 %",
    "loss_raw_abs": "median |rho| with loss (raw series)",
    "loss_diff_abs": "median |rho| with loss (differenced)",
    "grad_raw_abs": "median |rho| with gradient norm (raw series)",
    "early_change": "stable-rank change over the first 10 % (relative to step 0)",
    "early_min_at": "where the first 10 % reach their minimum stable rank (share of training)",
    "formation_50": "formation step, 50 % of final decodability (share of training)",
    "formation_90": "formation step, 90 % of final decodability (share of training)",
    "final_accuracy": "final held-out accuracy",
}
