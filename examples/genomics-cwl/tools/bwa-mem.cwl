cwlVersion: v1.2
class: CommandLineTool
doc: One sample's reads aligned to the reference (SAM on stdout).
requirements:
  DockerRequirement: {dockerPull: "dockyard/bwa:0.7.17"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
baseCommand: [bwa, mem, -t, "1", -K, "10000000"]
arguments:
  - {prefix: -R, valueFrom: "@RG\\tID:$(inputs.sample)\\tSM:$(inputs.sample)", position: 1}
inputs:
  reference:
    type: File
    secondaryFiles: [.amb, .ann, .bwt, .pac, .sa]
    inputBinding: {position: 2}
  reads: {type: File, inputBinding: {position: 3}}
  sample: string
stdout: aligned.sam
outputs:
  sam: {type: stdout}
