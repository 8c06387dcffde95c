cwlVersion: v1.2
class: CommandLineTool
doc: The reference's bwa index, beside it as secondary files.
requirements:
  DockerRequirement: {dockerPull: "dockyard/bwa:0.7.17"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
  InitialWorkDirRequirement: {listing: [$(inputs.fasta)]}
baseCommand: [bwa, index]
arguments: [$(inputs.fasta.basename)]
inputs:
  fasta: File
outputs:
  indexed:
    type: File
    outputBinding: {glob: $(inputs.fasta.basename)}
    secondaryFiles: [.amb, .ann, .bwt, .pac, .sa]
