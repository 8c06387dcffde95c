cwlVersion: v1.2
class: CommandLineTool
doc: One sample's reads at 30x, with sequencing errors.
requirements:
  DockerRequirement: {dockerPull: "dockyard/python3:bookworm"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
baseCommand: [python3]
arguments: [$(inputs.script.path), reads, --out, .]
inputs:
  script: File
  seed: {type: int, inputBinding: {prefix: --seed, position: 1}}
  sample: {type: string, inputBinding: {prefix: --sample, position: 2}}
  reference: {type: Directory, inputBinding: {prefix: --reference, position: 3}}
outputs:
  fastq: {type: File, outputBinding: {glob: reads.fq}}
