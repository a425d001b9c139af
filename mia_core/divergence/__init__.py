"""The divergence attack (Nasr et al. 2023 §5) in one package: ``prompts`` asks a chat model to repeat a
word forever (``mia prompt --strategy divergence``), ``scoring`` finds where each answer diverged and the
memorized text after it (``mia score RUN --index IDX``). It imports only the layers below it (formats,
the registry, base modules), so the extraction, scoring and inspection steps may all use it."""
