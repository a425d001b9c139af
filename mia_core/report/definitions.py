"""The definition of every figure the report prints, shown in its Definitions section."""

DEFINITIONS: list[tuple[str, str]] = [
    ("eligible rows", "rows whose request did not fail and whose true suffix has at least k tokens; every rate "
                      "and mean of a run is over them (the tables give rows, failed and eligible)"),
    ("exact extraction", "the first k generated tokens equal the first k tokens of the true suffix (Carlini et "
                         "al. 2021/2023, discoverable extraction with greedy decoding); for a teacher-forced run, "
                         "the model's argmax given the true context equals the truth at each of the first k "
                         "positions, the same verdict greedy decoding reaches"),
    ("95% CI", "Wilson score interval for a binomial proportion, at 95% confidence"),
    ("matched length", "leading tokens of the true suffix the generation reproduces before its first mismatch "
                       "(0 to k)"),
    ("approximate memorization", "normalized token edit distance between generation and true suffix at most the "
                                 "threshold (or BLEU at least the threshold with --bleu; Ippolito et al. 2022)"),
    ("position agreement (generated)", "fraction of the k positions where the generated token equals the true "
                                       "one (Biderman et al. 2023's Pythia memorization score); generated runs only"),
    ("next-token accuracy (teacher-forced)", "fraction of the k positions where the model's most likely token, "
                                             "given the true text before it, is the true one; teacher-forced runs "
                                             "only, and much higher than the position agreement of a generation"),
    ("corpus membership", "a generation contains a verbatim window of at least W tokens that occurs in the "
                          "indexed corpus (Nasr et al. 2023)"),
    ("AUC", "area under the ROC curve of a membership signal (higher score = more likely member); 0.5 is "
            "chance; its 95% CI is a bootstrap percentile interval over strings"),
    ("TPR@x%FPR", "true positive rate at a false positive rate strictly below x, read off the ROC points "
                  "(Carlini et al. 2022); withheld with fewer than 1/x nonmembers"),
    ("blind baseline", "a classifier that sees only the text (no model), cross-validated: an AUC near the "
                       "model's signals means the member/nonmember split is distinguishable without the model "
                       "(Das et al. 2024)"),
    ("P0 (Good-Turing)", "estimated probability that the next sampling unit finds an item not found yet "
                         "(Simple Good-Turing, Gale & Sampson 1995)"),
    ("Chao extrapolation, Chao1", "expected distinct items after t times more sampling units (Chao et al. 2014) "
                                  "and a lower bound on the total number of items (Chao 1984)"),
]
