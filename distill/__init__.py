"""Training with torch: data pipeline, KD losses and RDD weighting, the trainer, evaluation.

``distill.train.train(cfg)`` trains a teacher or distills a student; ``distill.evaluate.evaluate``
gives mIoU; ``distill.difficulty`` renders the RD_TFE / RD_TSE maps.
"""
