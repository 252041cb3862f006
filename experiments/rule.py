"""The rule for defaults (docs/accuracy.md, "Defaults"): an option becomes or stays a default only
if it beats the simpler alternative by more than two standard errors of the patient-paired
difference of WT Dice (and by at least a thousandth), with WT PPV falling by at most 0.01."""

STANDARD_ERRORS = 2.0
MIN_GAIN = 0.001            # where the errors vanish (identical labels), a gain must still be real
MAX_PPV_LOSS = 0.01


def passes(wt_dice_gain, standard_error, wt_ppv_change):
    """Whether an option with this mean paired WT Dice gain (and its standard error) and mean paired
    WT PPV change over its simpler alternative passes the rule."""
    return wt_dice_gain > max(STANDARD_ERRORS * standard_error, MIN_GAIN) and wt_ppv_change >= -MAX_PPV_LOSS
