
EOnce upon a time  *млL?(33s? *2.2

@Jh2o:keep=1.5,unknown=x