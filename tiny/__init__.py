"""Training of the bundled model hermes-tiny on ShapeStream (nothing in hermes/ imports it).

    python -m tiny.train              # retrain assets/models/hermes-tiny (the committed command)
    python -m tiny.diagnostics        # why the bundled model gets a question template wrong

One job per module:
- labels:      dense per-frame targets ShapeStream knows exactly (shape, colour, events per cell)
- samples:     one stream in the engine's token layout plus its questions (Sample); vision batches
- heads:       the auxiliary modules trained alongside the model (AuxHeads, EventHeads, QuestionProbes)
- losses:      the answer loss and the attention supervision (retrieval_loss, copy_loss)
- card:        the model directory: weights, tokenizer, hermes.json and the model card
- train:       the two-stage training loop, evaluation, command line
- diagnostics: per template, where the supervised heads look and what the answering row knows
"""
