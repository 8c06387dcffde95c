cwlVersion: v1.2
class: CommandLineTool
doc: The reference's FASTA index (.fai), beside it.
requirements:
  DockerRequirement: {dockerPull: "dockyard/samtools:1.16"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
  InitialWorkDirRequirement: {listing: [$(inputs.fasta)]}
baseCommand: [samtools, faidx]
arguments: [$(inputs.fasta.basename)]
inputs:
  fasta: File
outputs:
  indexed:
    type: File
    outputBinding: {glob: $(inputs.fasta.basename)}
    secondaryFiles: [.fai]
