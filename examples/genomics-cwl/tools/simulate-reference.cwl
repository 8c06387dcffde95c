cwlVersion: v1.2
class: CommandLineTool
doc: A random genome with variants planted in it (ref.fa, and the truth set truth.vcf).
requirements:
  DockerRequirement: {dockerPull: "dockyard/python3:bookworm"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
baseCommand: [python3]
arguments: [$(inputs.script.path), reference, --out, .]
inputs:
  script: File
  seed: {type: int, inputBinding: {prefix: --seed, position: 1}}
  samples: {type: 'string[]', inputBinding: {prefix: --samples, itemSeparator: ",", position: 2}}
outputs:
  folder: {type: Directory, outputBinding: {glob: $(runtime.outdir)}}
  fasta: {type: File, outputBinding: {glob: ref.fa}}
