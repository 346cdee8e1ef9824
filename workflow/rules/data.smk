rule resolved_config:
    output:
        f"{RESULTS}/config/resolved.yaml",
    log:
        f"logs/resolved_config.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        config={key: value for key, value in CFG.items() if key != "compute"},  # how, not what: no rerun
    script:
        "../../scripts/resolved_config.py"


rule prepare_dataset:
    output:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        rejects=f"{DATA}/{{dataset}}/rejects.csv",
    log:
        "logs/prepare_dataset/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        dataset=CFG["dataset"],
    script:
        "../../scripts/prepare_dataset.py"
