"""Fields every transformers 4.4x PretrainedConfig wrote, with their defaults.

The original Ovis code runs on transformers 4.4x and reads nested configs with these fields; an export from a model
built here (transformers 5) fills them in so the written config.json has the same fields as an original one.
"""

LEGACY_TRANSFORMERS_VERSION = "4.46.2"  # the version whose config layout exports follow

LEGACY_COMMON_FIELDS = {
    "_attn_implementation_autoset": False,
    "_name_or_path": '',
    "add_cross_attention": False,
    "architectures": None,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "bos_token_id": None,
    "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None,
    "decoder_start_token_id": None,
    "diversity_penalty": 0.0,
    "do_sample": False,
    "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0,
    "eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "finetuning_task": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "id2label": {'0': 'LABEL_0', '1': 'LABEL_1'},
    "is_decoder": False,
    "is_encoder_decoder": False,
    "label2id": {'LABEL_0': 0, 'LABEL_1': 1},
    "length_penalty": 1.0,
    "max_length": 20,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "pad_token_id": None,
    "prefix": None,
    "problem_type": None,
    "pruned_heads": {},
    "remove_invalid_values": False,
    "repetition_penalty": 1.0,
    "return_dict": True,
    "return_dict_in_generate": False,
    "sep_token_id": None,
    "suppress_tokens": None,
    "task_specific_params": None,
    "temperature": 1.0,
    "tf_legacy_loss": False,
    "tie_encoder_decoder": False,
    "tie_word_embeddings": True,
    "tokenizer_class": None,
    "top_k": 50,
    "top_p": 1.0,
    "torch_dtype": None,
    "torchscript": False,
    "typical_p": 1.0,
    "use_bfloat16": False,
}

# Per-architecture fields that 4.4x configs carried and the original code reads (it builds a HybridCache for Gemma 2
# generation only when cache_implementation says "hybrid"), or that they wrote whatever their value.
LEGACY_MODEL_FIELDS = {
    "gemma2": {"cache_implementation": "hybrid"},
    "qwen2": {"rope_scaling": None},  # Qwen2Config always wrote it (null unless a scaled rope)
}
