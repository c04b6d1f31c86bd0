"""Loading Fish Speech's model, codec and tokenizer from a model folder (our code, Fish Speech's classes)."""
