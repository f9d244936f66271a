"""pianotx: piano transcription research with a CQT + LSTM model, Keras Tuner and MLflow."""

__version__ = "0.1.0"
