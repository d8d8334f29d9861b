
LOnce upon a time  *млL?(33s? *2.2

@Jkeyformer:keep=0.3,recent=0.3