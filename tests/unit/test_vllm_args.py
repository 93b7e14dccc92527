from aim_engine.domain.vllm_args import to_cli


def test_command_line_from_args():
    args = {
        "tensor_parallel_size": 4,
        "enable_prefix_caching": True,
        "enforce_eager": False,
        "compilation_config": {"level": 3},
        "seed": None,
        "max_model_len": 32768,
    }
    assert to_cli(args) == [
        "--compilation-config",
        '{"level":3}',
        "--enable-prefix-caching",
        "--no-enforce-eager",
        "--max-model-len",
        "32768",
        "--tensor-parallel-size",
        "4",
    ]


def test_registry_checks_names_types_choices_and_bounds(bundle):
    reg = bundle.registry
    assert reg.check("tensor_parallel_size", 8) is None
    assert "not a vLLM engine argument" in reg.check("max_batch_size_typo", 1)
    assert "integer" in reg.check("max_model_len", "32k")
    assert "choose one of" in reg.check("kv_cache_dtype", "fp4")
    assert "above the maximum" in reg.check("gpu_memory_utilization", 1.5)
    assert "true or false" in reg.check("trust_remote_code", "yes")
    assert "not valid JSON" in reg.check("compilation_config", "{level")


def test_seed_keys_vllm_has_no_flag_for_are_translated(bundle):
    assert bundle.registry.canonical("max_batch_size") == "max_num_seqs"
    assert bundle.registry.canonical("max-model-len") == "max_model_len"
