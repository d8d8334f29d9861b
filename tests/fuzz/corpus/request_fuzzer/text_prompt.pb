
-Once upon a time  *млL?(33s? *2.2

@