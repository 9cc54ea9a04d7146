"""The churn scorer: champion model from the registry, scores with reasons, idempotent sinks.

    score.py   score_frame: pandas vectors -> score, band, top-3 reasons, record id (pure)
    model.py   ModelCache: the version at an alias, signature-checked, hot-swapped
    inputs.py  user_features -> score_frame input (change feed batch, or a table snapshot)
    sink.py    churn_scores Delta table + Kafka topic, written once per (writer, batch)
    runner.py  one scoring pass: a stream micro-batch (process_batch) or the table (score_table)
    bench.py   python -m scoring.bench: the costs quoted in docs/scoring.md

The jobs are jobs/stream_scores.py and jobs/score_batch.py; docs/scoring.md explains the rules.
"""
