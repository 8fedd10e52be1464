"""Fine-tune jobs started by the gateway, through a launcher (never by importing the trainer)."""
