"""The bottom layer: files longnet reads and writes (preprocessed arrays, checkpoints, model folders, visit tables).

It imports nothing from longnet but `errors`, `utils` and `dataset.case_names`, so every other layer can use it."""
