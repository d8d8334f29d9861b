
1Once upon a timeЪ  *млL?(33s? *2.2

@