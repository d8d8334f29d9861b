
=Once upon a time  *млL?(33s? *2.2

@Jwindow:size=64