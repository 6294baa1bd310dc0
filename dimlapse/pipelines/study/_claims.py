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

#: claim key -> short axis label of the study figure (two lines at most)
CLAIM_AXIS: dict[str, str] = {
    "early_change": "stable-rank change\nfirst 10 % (rel.)",
    "phase_order_share": "layers in phase\norder (share)",
    "early_sig": "transitions in\nfirst 25 % (share)",
    "formation_50": "50 % formation\n(share of training)",
    "formation_90": "90 % formation\n(share of training)",
    "early_min_at": "early minimum\n(share of training)",
}
