"""LoRA fine-tuning (``lora``) and the model organisms built with it (``organisms``)."""
