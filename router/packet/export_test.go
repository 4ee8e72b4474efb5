package packet

// SumScalar is Sum without the vector code, for benchmarks that compare.
var SumScalar = sumScalar
