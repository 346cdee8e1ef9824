rule resolved_config:
    output:
        f"{RESULTS}/config/resolved.yaml",
    params:
        config=CFG,
    conda:
        "../envs/cliplens.yaml"
    log:
        f"logs/resolved_config.log",
    script:
        "../../scripts/write_resolved_config.py"


rule prepare_dataset:
    output:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        rejects=f"{DATA}/{{dataset}}/rejects.csv",
    params:
        dataset=CFG["dataset"],
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/prepare_dataset/{dataset}.log",
    script:
        "../../scripts/prepare_dataset.py"
